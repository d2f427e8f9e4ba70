"""Appending to and verifying the per-workspace audit chain, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

import pytest

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.export import Range, export_lines
from sluicegate.core.audit.record import (
    GENESIS_HASH,
    Payload,
    PendingRecord,
    canonical,
)
from sluicegate.core.audit.verify import verify
from sluicegate.core.db.database import Database
from sluicegate.core.errors import StorageError
from sluicegate.core.workspaces import create_workspace

pytestmark = pytest.mark.anyio


def pending(workspace_id: int, request_id: str, **fields: object) -> PendingRecord:
    return PendingRecord(
        workspace_id=workspace_id,
        request_id=request_id,
        kind="request",
        created_at=datetime(2026, 12, 3, 18, 10, tzinfo=UTC),
        fields={"status": 200, **fields},
    )


async def workspace_id(database: Database, name: str = "acme") -> int:
    return (await create_workspace(database, name)).id


def test_the_canonical_encoding_sorts_keys_and_drops_whitespace() -> None:
    assert canonical({"b": 1, "a": "é", "c": [True, None]}) == (
        '{"a":"é","b":1,"c":[true,null]}'
    )


def test_a_float_cannot_enter_a_record() -> None:
    with pytest.raises(StorageError, match="integers only"):
        canonical({"cost": 0.1})


async def test_records_get_consecutive_sequence_numbers_linked_by_hash(
    database: Database,
) -> None:
    wid = await workspace_id(database)
    await append(database, [pending(wid, "r1"), pending(wid, "r2")])
    await append(database, [pending(wid, "r3")])
    rows = await database.fetch(
        "SELECT seq, prev_hash, hash, record FROM audit_record ORDER BY seq"
    )
    assert [row["seq"] for row in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert rows[2]["prev_hash"] == rows[1]["hash"]
    for row in rows:
        assert hashlib.sha256(row["record"].encode()).hexdigest() == row["hash"]
        assert json.loads(row["record"])["seq"] == row["seq"]


async def test_each_workspace_has_its_own_chain(database: Database) -> None:
    acme, globex = await workspace_id(database), await workspace_id(database, "globex")
    await append(database, [pending(acme, "a1"), pending(globex, "g1")])
    await append(database, [pending(globex, "g2"), pending(acme, "a2")])
    rows = await database.fetch(
        "SELECT workspace_id, seq FROM audit_record ORDER BY workspace_id, seq"
    )
    assert [(r["workspace_id"], r["seq"]) for r in rows] == [
        (acme, 1),
        (acme, 2),
        (globex, 1),
        (globex, 2),
    ]


async def test_replaying_a_stored_request_id_is_a_no_op(
    database: Database,
) -> None:
    wid = await workspace_id(database)
    first = await append(database, [pending(wid, "r1"), pending(wid, "r1")])
    again = await append(
        database, [pending(wid, "r1"), pending(wid, "r2")], replay=True
    )
    assert [c.seq for c in first] == [1]
    assert [(c.pending.request_id, c.seq) for c in again] == [("r2", 2)]
    assert await database.fetch("SELECT count(*) AS n FROM audit_record") == [{"n": 2}]


async def test_a_live_append_of_a_stored_request_id_is_refused_whole(
    database: Database,
) -> None:
    """Live records skip the lookup; a duplicate (never minted by the gateway)
    fails the transaction rather than leaving a gap in the chain."""
    wid = await workspace_id(database)
    await append(database, [pending(wid, "r1")])
    with pytest.raises(Exception, match=r"(?i)unique"):
        await append(database, [pending(wid, "r2"), pending(wid, "r1")])
    rows = await database.fetch("SELECT request_id, seq FROM audit_record")
    assert rows == [{"request_id": "r1", "seq": 1}]


async def test_a_payload_is_stored_beside_its_record(database: Database) -> None:
    wid = await workspace_id(database)
    payload = Payload("store", '{"q":1}', '{"a":2}', subject="user-7")
    record = pending(wid, "r1", payload_sha256=payload.digest())
    record.payload = payload
    await append(database, [record])
    rows = await database.fetch(
        "SELECT request_id, subject, request_body, response_body FROM audit_payload"
    )
    assert rows == [
        {
            "request_id": "r1",
            "subject": "user-7",
            "request_body": '{"q":1}',
            "response_body": '{"a":2}',
        }
    ]


async def test_an_intact_chain_verifies(database: Database) -> None:
    wid = await workspace_id(database)
    await append(database, [pending(wid, f"r{i}") for i in range(5)])
    [report] = await verify(database, "acme")
    assert report.ok, report.fault
    assert (report.records, report.head_seq) == (5, 5)


async def test_concurrent_appends_keep_the_chain_gap_free(
    database_url: str,
) -> None:
    writers = [await Database.connect(database_url) for _ in range(3)]
    try:
        await writers[0].migrate()
        wid = await workspace_id(writers[0])
        batches = [
            [pending(wid, f"w{n}-b{b}-{i}") for i in range(b + 1)]
            for n in range(len(writers))
            for b in range(3)
        ]
        await asyncio.gather(
            *(
                append(writers[index % len(writers)], batch)
                for index, batch in enumerate(batches)
            )
        )
        rows = await writers[0].fetch("SELECT seq FROM audit_record ORDER BY seq")
        assert [row["seq"] for row in rows] == list(range(1, 19))
        [report] = await verify(writers[0], "acme")
        assert report.ok, report.fault
    finally:
        for db in writers:
            await db.close()


def third_party_verify(lines: list[str]) -> str:
    """The README's algorithm, written without sluicegate's code."""
    prev_hash, seq = "0" * 64, 0
    for line in lines:
        record = json.loads(line)
        claimed = record.pop("hash")
        text = json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert hashlib.sha256(text.encode()).hexdigest() == claimed
        assert (record["prev_hash"], record["seq"]) == (prev_hash, seq + 1)
        prev_hash, seq = claimed, record["seq"]
    return prev_hash


async def test_an_export_verifies_with_the_documented_algorithm(
    database: Database,
) -> None:
    wid = await workspace_id(database)
    await append(database, [pending(wid, f"r{i}", note="naïve ✓") for i in range(4)])
    lines = [line async for line in export_lines(database, Range("acme"))]
    head = await database.fetch("SELECT hash FROM audit_chain_head")
    assert len(lines) == 4
    assert third_party_verify(lines) == head[0]["hash"]


async def test_an_export_can_cover_a_sequence_range(database: Database) -> None:
    wid = await workspace_id(database)
    await append(database, [pending(wid, f"r{i}") for i in range(6)])
    lines = [line async for line in export_lines(database, Range("acme", 2, 4))]
    assert [json.loads(line)["seq"] for line in lines] == [2, 3, 4]
