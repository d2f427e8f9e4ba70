"""Re-evaluating stored requests and answers as a new evaluation run.

``sluicegate evals rerun`` reads the bodies the audit trail keeps
(``audit_payload``), so nothing is generated upstream again, and judges them
with the evaluator as installed now: its current version, and the
configuration given, else the one in the workspace's pipeline file, else the
evaluator's defaults.  Earlier runs are left as they are.

A workspace whose audit stage keeps only hashes (``payloads: hash``) has no
bodies to re-read; payloads kept with ``payloads: redact`` are judged as
redacted (a ``pii`` re-run finds the masks, not the data).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sluicegate.core.db.database import storage_errors
from sluicegate.core.errors import InvalidRequest
from sluicegate.core.evals.bound import EvaluatorSpec, bind
from sluicegate.core.evals.jobs import judge
from sluicegate.core.evals.runs import add_result, new_rerun
from sluicegate.core.evals.text import prompt_text, response_text
from sluicegate.core.evaluator import Sample
from sluicegate.core.pipeline import DEFAULT_PIPELINE, pipeline_file, read_pipeline

if TYPE_CHECKING:
    from sluicegate.core.evals.bound import BoundEvaluator
    from sluicegate.core.services import Services

CONCURRENCY = 8


@dataclass(frozen=True)
class Selection:
    """Which stored requests a re-run reads."""

    workspace: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "rerun",
            "workspace": self.workspace,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    def where(self, table: str) -> tuple[str, list[Any]]:
        conditions: list[str] = ["1 = 1"]
        args: list[Any] = []
        if self.workspace is not None:
            conditions.append("w.name = {}")
            args.append(self.workspace)
        if self.since is not None:
            conditions.append(f"{table}.created_at >= {{}}")
            args.append(self.since)
        if self.until is not None:
            conditions.append(f"{table}.created_at <= {{}}")
            args.append(self.until)
        return " AND ".join(conditions), args


@dataclass(frozen=True)
class RerunReport:
    run_id: int
    evaluator: str
    version: str
    config_hash: str
    config_source: str
    requests: int
    errors: int


async def rerun(
    services: Services,
    name: str,
    selection: Selection,
    config: dict[str, Any] | None = None,
) -> RerunReport:
    """Judge the selected stored requests with evaluator ``name``; a new run."""
    spec, source = _spec(services, name, selection.workspace, config)
    bound = bind(spec, services, where=source)
    payloads = await _payloads(services, selection)
    workspace_id = await _workspace_id(services, selection.workspace)
    run_id = await new_rerun(
        services.database, bound, workspace_id, selection.as_json()
    )

    gate = asyncio.Semaphore(CONCURRENCY)
    outcomes = await asyncio.gather(
        *(_rejudge(services, bound, run_id, row, gate) for row in payloads)
    )
    return RerunReport(
        run_id,
        bound.name,
        bound.version,
        bound.config_hash,
        source,
        requests=len(outcomes),
        errors=sum(1 for ok in outcomes if not ok),
    )


def _spec(
    services: Services,
    name: str,
    workspace: str | None,
    config: dict[str, Any] | None,
) -> tuple[EvaluatorSpec, str]:
    if config is not None:
        return EvaluatorSpec(name=name, **config), "--config"
    directory = services.settings.pipelines_dir
    path = pipeline_file(directory, workspace or DEFAULT_PIPELINE)
    if path is not None:
        found = _spec_in(path, services, name)
        if found is not None:
            return found, str(path)
    return EvaluatorSpec(name=name), "the evaluator's defaults"


def _spec_in(path: Path, services: Services, name: str) -> EvaluatorSpec | None:
    spec = read_pipeline(path, services.registry.stage_types)
    for _, stage_config in spec.stages:
        for entry in getattr(stage_config, "evaluators", None) or ():
            if isinstance(entry, EvaluatorSpec) and entry.name == name:
                return entry
    return None


async def _payloads(services: Services, selection: Selection) -> list[dict[str, Any]]:
    db = services.database
    where, args = selection.where("p")
    with storage_errors("reading stored payloads"):
        rows = await db.fetch(
            "SELECT p.request_id, p.workspace_id, w.name AS workspace, "
            "p.request_body, p.response_body FROM audit_payload p "
            f"JOIN workspace w ON w.id = p.workspace_id WHERE {where} "
            "ORDER BY p.id",
            *args,
        )
        if rows:
            return rows
        where, args = selection.where("r")
        records = await db.fetch(
            "SELECT count(*) AS n FROM audit_record r "
            f"JOIN workspace w ON w.id = r.workspace_id WHERE {where}",
            *args,
        )
    if int(records[0]["n"]):
        raise InvalidRequest(
            f"{records[0]['n']} requests match, but their bodies were not kept: "
            "the workspace's audit stage keeps only hashes (payloads: hash), "
            "so they cannot be re-evaluated; set payloads: store (or redact) "
            "for requests from now on"
        )
    raise InvalidRequest(
        "no stored requests match the selection; requests are stored by an "
        "audit stage with payloads: store or redact"
    )


async def _workspace_id(services: Services, workspace: str | None) -> int | None:
    if workspace is None:
        return None
    with storage_errors(f"finding workspace {workspace}"):
        rows = await services.database.fetch(
            "SELECT id FROM workspace WHERE name = {}", workspace
        )
    return int(rows[0]["id"]) if rows else None


async def _rejudge(
    services: Services,
    bound: BoundEvaluator,
    run_id: int,
    row: dict[str, Any],
    gate: asyncio.Semaphore,
) -> bool:
    sample = _sample(row)
    async with gate:
        judged = await judge(bound, sample)
    await add_result(
        services.database,
        run_id,
        row["request_id"],
        int(row["workspace_id"]),
        judged.values(),
    )
    return judged.error is None


def _sample(row: dict[str, Any]) -> Sample:
    try:
        body = orjson.loads(row["request_body"])
    except orjson.JSONDecodeError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return Sample(
        request_id=row["request_id"],
        workspace=row["workspace"],
        model=str(body.get("model", "")),
        prompt=prompt_text(body),
        response=response_text(row["response_body"]),
        request_body=body,
    )
