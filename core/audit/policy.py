"""How long each workspace keeps audit payloads and records.

A workspace's policy comes from one of two places, the first that has one:

1. its row in ``retention_policy``, written by ``sluicegate retention set`` or
   the admin API (:func:`set_policy`, :func:`clear_policy`);
2. the ``retention:`` of the ``audit`` stage in its pipeline file
   (``<workspace>.yaml``, else ``default.yaml``).

The row wins whole (a field it leaves empty means "for ever", not "ask the
file"), so what an administrator set is exactly what applies.  Without either,
everything is kept.  ``payload_days`` deletes request and response bodies
older than that; ``record_days`` drops chain records older than that behind a
checkpoint (:mod:`.retention`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluicegate.core.audit.verify import workspaces
from sluicegate.core.db.database import Database, storage_errors
from sluicegate.core.errors import InvalidRequest
from sluicegate.core.pipeline import pipeline_file

log = logging.getLogger(__name__)

Source = Literal["table", "pipeline", "none"]


class RetentionConfig(BaseModel):
    """``retention:`` of the audit stage: days to keep, each optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete request and response bodies older than this many "
        "days (the chain keeps their hashes). Unset: keep them.",
    )
    record_days: int | None = Field(
        default=None,
        ge=1,
        description="Drop audit records older than this many days behind a "
        "checkpoint, from which verification continues. Unset: keep them.",
    )


@dataclass(frozen=True)
class Policy:
    """The retention that applies to one workspace, and where it came from."""

    workspace_id: int
    workspace: str
    payload_days: int | None
    record_days: int | None
    source: Source

    @property
    def deletes_anything(self) -> bool:
        return self.payload_days is not None or self.record_days is not None


async def policies(
    db: Database, pipelines_dir: Path | None, workspace: str | None = None
) -> list[Policy]:
    """The policy of ``workspace`` (of every workspace if None)."""
    rows = await _table_rows(db)
    return [
        _policy_of(workspace_id, name, rows.get(workspace_id), pipelines_dir)
        for workspace_id, name in await workspaces(db, workspace)
    ]


def _policy_of(
    workspace_id: int,
    name: str,
    row: tuple[int | None, int | None] | None,
    pipelines_dir: Path | None,
) -> Policy:
    if row is not None:
        return Policy(workspace_id, name, row[0], row[1], "table")
    config = pipeline_retention(pipelines_dir, name) if pipelines_dir else None
    if config is None:
        return Policy(workspace_id, name, None, None, "none")
    return Policy(
        workspace_id, name, config.payload_days, config.record_days, "pipeline"
    )


async def set_policy(
    db: Database,
    workspace: str,
    payload_days: int | None,
    record_days: int | None,
    now: datetime,
) -> Policy:
    """Store the policy of ``workspace`` (None: keep for ever); it then applies."""
    validate_days(payload_days, "payload_days")
    validate_days(record_days, "record_days")
    [(workspace_id, name)] = await workspaces(db, workspace)
    with storage_errors(f"setting the retention policy of {workspace!r}"):
        await db.fetch(
            "INSERT INTO retention_policy "
            "(workspace_id, payload_days, record_days, updated_at) "
            "VALUES ({}, {}, {}, {}) ON CONFLICT (workspace_id) DO UPDATE SET "
            "payload_days = excluded.payload_days, "
            "record_days = excluded.record_days, updated_at = excluded.updated_at",
            workspace_id,
            payload_days,
            record_days,
            now,
        )
    return Policy(workspace_id, name, payload_days, record_days, "table")


async def clear_policy(db: Database, workspace: str) -> bool:
    """Forget the stored policy of ``workspace`` (the pipeline's applies again).

    Returns whether there was one.
    """
    [(workspace_id, _)] = await workspaces(db, workspace)
    with storage_errors(f"clearing the retention policy of {workspace!r}"):
        rows = await db.fetch(
            "DELETE FROM retention_policy WHERE workspace_id = {} "
            "RETURNING workspace_id",
            workspace_id,
        )
    return bool(rows)


def pipeline_retention(directory: Path, workspace: str) -> RetentionConfig | None:
    """The audit stage's ``retention:`` in the workspace's pipeline file, if any.

    A file that cannot be read or whose ``retention:`` is invalid counts as no
    policy (logged): the gateway refuses such a file anyway.
    """
    path = pipeline_file(directory, workspace)
    if path is None:
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _audit_retention(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        log.warning(
            "no retention taken from %s for workspace %s: %s", path, workspace, exc
        )
        return None


def _audit_retention(raw: Any) -> RetentionConfig | None:
    stages = raw.get("stages") if isinstance(raw, dict) else None
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, dict) and stage.get("type") == "audit":
            retention = stage.get("retention")
            if retention is None:
                return None
            return RetentionConfig.model_validate(retention)
    return None


async def _table_rows(db: Database) -> dict[int, tuple[int | None, int | None]]:
    with storage_errors("reading retention policies"):
        rows = await db.fetch(
            "SELECT workspace_id, payload_days, record_days FROM retention_policy"
        )
    return {
        int(row["workspace_id"]): (row["payload_days"], row["record_days"])
        for row in rows
    }


def validate_days(value: int | None, flag: str) -> None:
    """InvalidRequest unless ``value`` is None or at least 1."""
    if value is not None and value < 1:
        raise InvalidRequest(
            f"{flag} is {value}; it must be a whole number of days, at least 1 "
            "(leave it out to keep for ever)"
        )
