"""Writing a range of audit records as JSON Lines for a third party.

Each line is one record object, exactly as chained, with its ``hash`` added.
To verify a file (README, "Audit trail"): per ``workspace_id``, in ``seq``
order, remove ``hash`` from the object, encode the rest canonically (sorted
keys, no whitespace, UTF-8), check that its SHA-256 equals ``hash``, that
``seq`` rises by one and that ``prev_hash`` equals the previous line's
``hash`` (64 zeros before ``seq`` 1).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluicegate.core.audit.verify import workspaces
from sluicegate.core.db.database import Database

PAGE = 1000


@dataclass(frozen=True)
class Range:
    """Which records to export; every bound is optional and inclusive."""

    workspace: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    since: datetime | None = None
    until: datetime | None = None


async def export_lines(db: Database, wanted: Range) -> AsyncIterator[str]:
    """The JSON Lines of the records in ``wanted``, by workspace then seq."""
    for workspace_id, _ in await workspaces(db, wanted.workspace):
        async for row in _rows(db, workspace_id, wanted):
            line = json.loads(row["record"])
            line["hash"] = row["hash"]
            yield json.dumps(
                line, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )


async def _rows(
    db: Database, workspace_id: int, wanted: Range
) -> AsyncIterator[dict[str, Any]]:
    conditions, args = _conditions(wanted)
    after = (wanted.from_seq or 1) - 1
    while True:
        rows = await db.fetch(
            "SELECT seq, hash, record FROM audit_record "
            f"WHERE workspace_id = {{}} AND seq > {{}}{conditions} "
            "ORDER BY seq LIMIT {}",
            workspace_id,
            after,
            *args,
            PAGE,
        )
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = int(rows[-1]["seq"])


def _conditions(wanted: Range) -> tuple[str, list[Any]]:
    sql, args = "", []
    for clause, value in (
        (" AND seq <= {}", wanted.to_seq),
        (" AND created_at >= {}", wanted.since),
        (" AND created_at <= {}", wanted.until),
    ):
        if value is not None:
            sql += clause
            args.append(value)
    return sql, args
