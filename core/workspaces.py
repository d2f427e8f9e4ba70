"""Workspaces: the tenants that API keys, usage and pipelines belong to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluicegate.core.db.database import Violation, storage_errors, violation_of
from sluicegate.core.errors import InvalidRequest, StorageError

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

NAME_PATTERN = "^[a-z0-9][a-z0-9_-]*$"
NAME_MAX_LENGTH = 63
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class WorkspaceRow:
    id: int
    name: str
    created_at: datetime


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else InvalidRequest."""
    if not _NAME.fullmatch(name) or len(name) > NAME_MAX_LENGTH:
        raise InvalidRequest(
            f"invalid workspace name {name!r}: use 1 to {NAME_MAX_LENGTH} "
            f"lowercase letters, digits, '-' and '_', starting with a letter or "
            f"digit (pattern {NAME_PATTERN})",
            param="name",
        )
    return name


async def create_workspace(db: Database, name: str) -> WorkspaceRow:
    """Create a workspace; InvalidRequest if the name is invalid or taken."""
    validate_name(name)
    table = db.tables.workspace
    try:
        with storage_errors(f"creating workspace {name!r}"):
            rows = await table.insert(table(name=name)).returning(*_columns(db))
    except StorageError as exc:
        if violation_of(exc) is Violation.UNIQUE:
            raise InvalidRequest(f"workspace {name!r} exists", param="name") from None
        raise
    return _row(rows[0])


async def list_workspaces(db: Database) -> list[WorkspaceRow]:
    """Every workspace, by name."""
    table = db.tables.workspace
    with storage_errors("listing workspaces"):
        rows = await table.select(*_columns(db)).order_by(table.name)
    return [_row(row) for row in rows]


async def get_workspace(db: Database, name: str) -> WorkspaceRow | None:
    """The workspace called ``name``, or None."""
    table = db.tables.workspace
    with storage_errors(f"reading workspace {name!r}"):
        row = await table.select(*_columns(db)).where(table.name == name).first()
    return _row(row) if row else None


def _columns(db: Database) -> tuple[Any, ...]:
    table = db.tables.workspace
    return (table.id, table.name, table.created_at)


def _row(row: dict[str, Any]) -> WorkspaceRow:
    return WorkspaceRow(id=row["id"], name=row["name"], created_at=row["created_at"])
