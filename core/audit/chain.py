"""Appending records to their workspaces' chains, in one transaction.

Each workspace has a row in ``audit_chain_head`` with the last ``seq`` and
``hash``.  :func:`append` locks the head row of every workspace in the batch
(in workspace id order, so two writers never deadlock), gives the new records
the next sequence numbers and links them, inserts them with their payloads and
moves the heads, all in one transaction.  On PostgreSQL the lock is the
head row's upsert, and a batch's inserts and head update go as one
statement; SQLite's ``BEGIN IMMEDIATE`` already makes the transaction the
only writer.  So any number of processes may append at once
and each chain stays gap-free.

With ``replay=True`` a record whose request id is already stored is
skipped, which makes replaying a batch (after a crash, or from the spool)
harmless.  Live records skip that lookup: their request ids are minted by the
gateway, so none can be stored yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluicegate.core.audit.record import ChainedRecord, PendingRecord
from sluicegate.core.db.database import Database

ROWS_PER_INSERT = 100

_RECORD_COLUMNS = (
    "workspace_id, seq, request_id, kind, created_at, prev_hash, hash, record"
)
_PAYLOAD_COLUMNS = (
    "request_id, workspace_id, subject, policy, request_body, response_body, created_at"
)


async def append(
    db: Database, records: Sequence[PendingRecord], *, replay: bool = False
) -> list[ChainedRecord]:
    """Chain and store ``records``; return those newly stored, in chain order."""
    by_workspace: dict[int, dict[str, PendingRecord]] = {}
    for record in records:
        by_workspace.setdefault(record.workspace_id, {}).setdefault(
            record.request_id, record
        )

    appended: list[ChainedRecord] = []
    async with db.transaction():
        for workspace_id in sorted(by_workspace):
            batch = list(by_workspace[workspace_id].values())
            appended += await _append_to(db, workspace_id, batch, replay)
    return appended


async def _append_to(
    db: Database, workspace_id: int, records: list[PendingRecord], replay: bool
) -> list[ChainedRecord]:
    seq, prev_hash = await _lock_head(db, workspace_id)
    stored = (
        await _stored_request_ids(db, [r.request_id for r in records])
        if replay
        else set()
    )

    chained: list[ChainedRecord] = []
    for record in records:
        if record.request_id in stored:
            continue
        seq += 1
        chained.append(ChainedRecord.of(record, seq, prev_hash))
        prev_hash = chained[-1].hash
    if not chained:
        return []

    await _store(db, workspace_id, chained)
    return chained


async def _store(db: Database, workspace_id: int, chained: list[ChainedRecord]) -> None:
    """Insert the records and payloads and move the head to the last record.

    On PostgreSQL a batch that fits one insert is one statement (the inserts
    as data-modifying CTEs of the head's update): one round trip, not three.
    """
    records = [_record_row(c) for c in chained]
    payloads = [_payload_row(c) for c in chained if c.pending.payload is not None]
    head = "UPDATE audit_chain_head SET seq = {}, hash = {} WHERE workspace_id = {}"
    head_args = (chained[-1].seq, chained[-1].hash, workspace_id)

    if db.is_postgres and len(records) <= ROWS_PER_INSERT:
        sql, args = _values("audit_record", _RECORD_COLUMNS, records)
        ctes = f"r AS ({sql})"
        if payloads:
            sql, more = _values("audit_payload", _PAYLOAD_COLUMNS, payloads)
            ctes += f", p AS ({sql})"
            args += more
        await db.fetch(f"WITH {ctes} {head}", *args, *head_args)
        return

    await _insert(db, "audit_record", _RECORD_COLUMNS, records)
    await _insert(db, "audit_payload", _PAYLOAD_COLUMNS, payloads)
    await db.fetch(head, *head_args)


async def _lock_head(db: Database, workspace_id: int) -> tuple[int, str]:
    """The workspace's head, created if missing and locked, in one statement:
    the no-op update on conflict takes the row lock until the commit."""
    rows = await db.fetch(
        "INSERT INTO audit_chain_head (workspace_id) VALUES ({}) "
        "ON CONFLICT (workspace_id) DO UPDATE SET seq = audit_chain_head.seq "
        "RETURNING seq, hash",
        workspace_id,
    )
    return int(rows[0]["seq"]), str(rows[0]["hash"])


async def _stored_request_ids(db: Database, request_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(request_ids), ROWS_PER_INSERT):
        chunk = request_ids[start : start + ROWS_PER_INSERT]
        marks = ", ".join("{}" for _ in chunk)
        rows = await db.fetch(
            f"SELECT request_id FROM audit_record WHERE request_id IN ({marks})",
            *chunk,
        )
        found.update(str(row["request_id"]) for row in rows)
    return found


async def _insert(
    db: Database, table: str, columns: str, rows: list[tuple[Any, ...]]
) -> None:
    for start in range(0, len(rows), ROWS_PER_INSERT):
        sql, args = _values(table, columns, rows[start : start + ROWS_PER_INSERT])
        await db.fetch(sql, *args)


def _values(
    table: str, columns: str, rows: list[tuple[Any, ...]]
) -> tuple[str, list[Any]]:
    """One ``INSERT ... VALUES`` of ``rows``, with ``{}`` placeholders, and its
    arguments in order."""
    one = "(" + ", ".join("{}" for _ in rows[0]) + ")"
    values = ", ".join(one for _ in rows)
    args = [value for row in rows for value in row]
    return f"INSERT INTO {table} ({columns}) VALUES {values}", args


def _record_row(record: ChainedRecord) -> tuple[Any, ...]:
    pending = record.pending
    return (
        pending.workspace_id,
        record.seq,
        pending.request_id,
        pending.kind,
        pending.created_at,
        record.prev_hash,
        record.hash,
        record.text,
    )


def _payload_row(record: ChainedRecord) -> tuple[Any, ...]:
    pending = record.pending
    payload = pending.payload
    assert payload is not None
    return (
        pending.request_id,
        pending.workspace_id,
        payload.subject,
        payload.policy,
        payload.request,
        payload.response,
        pending.created_at,
    )
