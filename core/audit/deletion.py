"""What retention and erasure share: the only way audit data is deleted.

Every deletion happens inside one transaction that first locks the
workspace's chain head (so no record is appended meanwhile and two deleters
queue), then appends an audit record saying what is deleted and why, then
writes a deletion grant naming that record for each payload, and only then
deletes the payloads: the database refuses to delete a payload no grant names
(migration ``m20261203_1810_audit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.record import ChainedRecord, PendingRecord, digest
from sluicegate.core.db.database import Database

CHUNK = 100
"""Values per statement, well below every dialect's parameter limit."""


async def lock_chain(db: Database, workspace_id: int) -> None:
    """Take the workspace's chain head for this transaction (create it if new)."""
    await db.fetch(
        "INSERT INTO audit_chain_head (workspace_id) VALUES ({}) "
        "ON CONFLICT (workspace_id) DO NOTHING",
        workspace_id,
    )
    lock = " FOR UPDATE" if db.is_postgres else ""
    await db.fetch(
        f"SELECT seq FROM audit_chain_head WHERE workspace_id = {{}}{lock}",
        workspace_id,
    )


async def append_event(
    db: Database, workspace_id: int, kind: str, now: datetime, fields: dict[str, Any]
) -> ChainedRecord:
    """Chain one audit record of ``kind`` (``retention``, ``erasure``) at ``now``."""
    pending = PendingRecord(
        workspace_id=workspace_id,
        request_id=f"{kind}-{uuid.uuid4().hex}",
        kind=kind,
        created_at=now,
        fields={"action": kind, **fields},
    )
    [chained] = await append(db, [pending])
    return chained


def ids_digest(request_ids: Sequence[str]) -> str:
    """SHA-256 of the sorted request ids, one per line: what a record lists."""
    return digest("\n".join(sorted(request_ids)))


async def delete_payloads(
    db: Database,
    request_ids: Sequence[str],
    granted_by: ChainedRecord,
    now: datetime,
) -> None:
    """Grant, then delete, the payloads of ``request_ids``."""
    reason = granted_by.pending.kind
    for chunk in _chunks(request_ids):
        values = ", ".join("({}, {}, {}, {})" for _ in chunk)
        args = [
            value
            for request_id in chunk
            for value in (request_id, granted_by.pending.request_id, reason, now)
        ]
        await db.fetch(
            "INSERT INTO audit_deletion_grant "
            f"(payload_request_id, granted_by, reason, created_at) VALUES {values}",
            *args,
        )
        await delete_where_in(db, "audit_payload", "request_id", chunk)


async def delete_where_in(
    db: Database, table: str, column: str, values: Sequence[Any]
) -> None:
    """``DELETE FROM table WHERE column IN values``, a chunk at a time."""
    for chunk in _chunks(values):
        marks = ", ".join("{}" for _ in chunk)
        await db.fetch(f"DELETE FROM {table} WHERE {column} IN ({marks})", *chunk)


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[start : start + CHUNK] for start in range(0, len(values), CHUNK)]
