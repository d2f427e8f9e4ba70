"""Checking audit chains: every link, every hash, every payload still kept.

:func:`verify` walks each workspace's records in ``seq`` order and stops at the
first bad one, naming it and what is wrong: a gap in the sequence, a
``prev_hash`` that is not the hash of the record before, a hash that does not
match the stored text, text that is not canonical JSON, a column that
disagrees with the text, or a stored payload whose digest differs from the
record's ``payload_sha256``.  Finally the workspace's chain head must point at
the last record (records removed from the end show up there).

After retention dropped a workspace's oldest records, its chain starts at the
newest ``audit_checkpoint``: the first record left must follow the
checkpoint's seq and hash, the ``retention`` record the checkpoint names must
be in the chain stating that very checkpoint, no record may remain at or
behind it, and no checkpoint may be left in progress.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sluicegate.core.audit.record import GENESIS_HASH, Payload, canonical, digest
from sluicegate.core.db.database import Database
from sluicegate.core.errors import InvalidRequest, StorageError

PAGE = 500
LINKED_COLUMNS = ("workspace_id", "seq", "request_id", "prev_hash", "kind")


@dataclass(frozen=True)
class Fault:
    """The first bad record of a chain and what is wrong with it."""

    seq: int | None
    request_id: str | None
    record_id: int | None
    problem: str


@dataclass
class ChainReport:
    """The result of verifying one workspace's chain."""

    workspace_id: int
    workspace: str
    records: int = 0
    payloads: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    fault: Fault | None = None
    checkpoint_seq: int = 0
    """The seq the chain continues after (0: it starts at seq 1)."""

    @property
    def ok(self) -> bool:
        return self.fault is None


async def verify(db: Database, workspace: str | None = None) -> list[ChainReport]:
    """Verify the chain of ``workspace`` (every workspace if None)."""
    return [
        await verify_workspace(db, workspace_id, name)
        for workspace_id, name in await workspaces(db, workspace)
    ]


async def workspaces(db: Database, name: str | None) -> list[tuple[int, str]]:
    """(id, name) of the named workspace, or of all; InvalidRequest if unknown."""
    if name is None:
        rows = await db.fetch("SELECT id, name FROM workspace ORDER BY id")
    else:
        rows = await db.fetch("SELECT id, name FROM workspace WHERE name = {}", name)
        if not rows:
            raise InvalidRequest(
                f"there is no workspace {name!r}; `sluicegate workspace list` "
                "shows the workspaces"
            )
    return [(int(row["id"]), str(row["name"])) for row in rows]


async def verify_workspace(db: Database, workspace_id: int, name: str) -> ChainReport:
    report = ChainReport(workspace_id, name)
    start = await _checkpoint(db, workspace_id)
    seq, prev_hash = (start.seq, start.hash) if start else (0, GENESIS_HASH)
    report.checkpoint_seq = seq
    report.fault = await _checkpoint_fault(db, workspace_id, start)
    if report.fault is not None:
        return report

    explained = start is None
    async for row in _records(db, workspace_id, seq):
        problem = check(row, seq + 1, prev_hash)
        if problem is None and start and row["request_id"] == start.explained_by:
            problem, explained = _explanation_problem(row, start), True
        if problem is not None:
            report.fault = Fault(row["seq"], row["request_id"], row["id"], problem)
            return report
        seq, prev_hash = int(row["seq"]), str(row["hash"])
        report.records += 1
        report.payloads += row["request_body"] is not None

    report.head_seq, report.head_hash = seq, prev_hash
    if start is not None and not explained:
        report.fault = Fault(
            start.seq,
            start.explained_by,
            None,
            f"the retention record {start.explained_by} that explains the "
            f"checkpoint at seq {start.seq} is not in the chain",
        )
        return report
    report.fault = await _head_fault(db, workspace_id, seq, prev_hash)
    return report


def check(row: dict[str, Any], seq: int, prev_hash: str) -> str | None:
    """What is wrong with one stored record at chain position ``seq``, or None."""
    if row["seq"] != seq:
        return f"sequence gap: expected seq {seq}, found seq {row['seq']}"
    if row["prev_hash"] != prev_hash:
        return f"prev_hash is not the hash of seq {seq - 1} ({prev_hash})"
    if digest(row["record"]) != row["hash"]:
        return "the stored hash does not match the record's content"
    try:
        body = json.loads(row["record"])
        if canonical(body) != row["record"]:
            return "the record is not in canonical form"
    except (ValueError, StorageError) as exc:
        return f"the record is not canonical JSON: {exc}"
    for column in LINKED_COLUMNS:
        if body.get(column) != row[column]:
            return f"column {column} ({row[column]!r}) disagrees with the record"
    return _payload_problem(row, body)


def _payload_problem(row: dict[str, Any], body: dict[str, Any]) -> str | None:
    if row["request_body"] is None:
        return None
    kept = Payload(row["policy"], row["request_body"], row["response_body"])
    if body.get("payload_sha256") != kept.digest():
        return "the stored payload differs from the payload_sha256 in the record"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """Where a chain continues after retention dropped its oldest records."""

    seq: int
    hash: str
    explained_by: str


async def _checkpoint(db: Database, workspace_id: int) -> Checkpoint | None:
    rows = await db.fetch(
        "SELECT seq, hash, explained_by FROM audit_checkpoint "
        "WHERE workspace_id = {} ORDER BY seq DESC LIMIT 1",
        workspace_id,
    )
    if not rows:
        return None
    row = rows[0]
    return Checkpoint(int(row["seq"]), str(row["hash"]), str(row["explained_by"]))


async def _checkpoint_fault(
    db: Database, workspace_id: int, start: Checkpoint | None
) -> Fault | None:
    """A checkpoint left in progress, or a record left behind the checkpoint."""
    if start is None:
        return None
    left_open = await db.fetch(
        "SELECT seq FROM audit_checkpoint WHERE workspace_id = {} "
        "AND in_progress = {} ORDER BY seq LIMIT 1",
        workspace_id,
        True,
    )
    if left_open:
        seq = int(left_open[0]["seq"])
        return Fault(
            seq,
            None,
            None,
            f"the checkpoint at seq {seq} was left in progress, so the records "
            "behind it could be deleted",
        )
    behind = await db.fetch(
        "SELECT id, seq, request_id FROM audit_record WHERE workspace_id = {} "
        "AND seq <= {} ORDER BY seq LIMIT 1",
        workspace_id,
        start.seq,
    )
    if not behind:
        return None
    row = behind[0]
    return Fault(
        row["seq"],
        row["request_id"],
        row["id"],
        f"the record is behind the checkpoint at seq {start.seq} but was not "
        "dropped with the records before it",
    )


def _explanation_problem(row: dict[str, Any], start: Checkpoint) -> str | None:
    stated = json.loads(row["record"]).get("checkpoint")
    if row["kind"] == "retention" and stated == {"seq": start.seq, "hash": start.hash}:
        return None
    return (
        f"the checkpoint at seq {start.seq} ({start.hash}) is not the one this "
        "record, which it names as its explanation, states"
    )


async def _records(
    db: Database, workspace_id: int, after: int
) -> AsyncIterator[dict[str, Any]]:
    while True:
        rows = await db.fetch(
            "SELECT r.id, r.workspace_id, r.seq, r.request_id, r.kind, "
            "r.prev_hash, r.hash, r.record, p.policy, p.request_body, "
            "p.response_body FROM audit_record r "
            "LEFT JOIN audit_payload p ON p.request_id = r.request_id "
            "WHERE r.workspace_id = {} AND r.seq > {} ORDER BY r.seq LIMIT {}",
            workspace_id,
            after,
            PAGE,
        )
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = int(rows[-1]["seq"])


async def _head_fault(
    db: Database, workspace_id: int, seq: int, last_hash: str
) -> Fault | None:
    rows = await db.fetch(
        "SELECT seq, hash FROM audit_chain_head WHERE workspace_id = {}", workspace_id
    )
    head_seq, head_hash = (
        (int(rows[0]["seq"]), str(rows[0]["hash"])) if rows else (0, GENESIS_HASH)
    )
    if (head_seq, head_hash) == (seq, last_hash):
        return None
    return Fault(
        head_seq,
        None,
        None,
        f"the chain head is at seq {head_seq} but the last record found is seq "
        f"{seq}: records are missing from the end of the chain",
    )
