"""The start-of-request journal (core/audit/inflight.py): requests begun and
never ended are found in a stopped process's journal, a torn line is skipped,
the journal stays bounded, and a successor's audit writer records the open
requests as ``interrupted`` exactly once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.inflight import (
    Begun,
    Journal,
    Orphans,
    interrupted_record,
    open_requests,
)
from sluicegate.core.audit.record import PendingRecord
from sluicegate.core.audit.spool import audit_spool
from sluicegate.core.audit.verify import verify
from sluicegate.core.audit.writer import AuditWriter
from sluicegate.core.db.database import Database
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.throwaway import table_locked

ADMITTED = datetime(2026, 12, 3, 18, 10, 0, 123456, tzinfo=UTC)
ADMITTED_MICROS = 1_796_321_400_123_456
SETTLE_SECONDS = 10.0


def begun(request_id: str, workspace_id: int = 1) -> Begun:
    return Begun(
        request_id=request_id,
        workspace_id=workspace_id,
        key_id=7,
        endpoint="chat.completions",
        model="gpt-4o-mini",
        stream=True,
        client_ip="203.0.113.9",
        admitted_at=ADMITTED_MICROS,
        request_sha256="ab" * 32,
    )


def left_behind(directory: Path, *opened: str, ended: tuple[str, ...] = ()) -> Path:
    """A journal as a stopped process leaves it: ``opened`` begun, ``ended`` ended,
    the lock released."""
    journal = Journal(directory, "dead")
    for request_id in opened:
        journal.begin(begun(request_id))
    for request_id in ended:
        journal.end(request_id)
    journal.close()
    return journal.path


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_a_request_begun_and_not_ended_is_open(tmp_path: Path) -> None:
    path = left_behind(tmp_path, "r1", "r2", "r3", ended=("r2",))
    assert [one.request_id for one in open_requests([path])] == ["r1", "r3"]


def test_an_ended_line_closes_its_request_in_any_journal(tmp_path: Path) -> None:
    first = left_behind(tmp_path / "a", "r1", "r2")
    second = tmp_path / "b" / "inflight-x.jsonl"
    second.parent.mkdir()
    second.write_bytes(b'{"event":"ended","request_id":"r1"}\n')
    assert [one.request_id for one in open_requests([first, second])] == ["r2"]


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = left_behind(tmp_path, "r1", "r2")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 20])
    assert [one.request_id for one in open_requests([path])] == ["r1"]


def test_a_begun_line_holds_what_the_record_needs(tmp_path: Path) -> None:
    path = left_behind(tmp_path, "r1")
    assert lines(path) == [
        {
            "event": "begun",
            "request_id": "r1",
            "workspace_id": 1,
            "key_id": 7,
            "endpoint": "chat.completions",
            "model": "gpt-4o-mini",
            "stream": True,
            "client_ip": "203.0.113.9",
            "admitted_at": ADMITTED_MICROS,
            "request_sha256": "ab" * 32,
        }
    ]


def test_an_interrupted_record_has_status_0_and_no_response_hash() -> None:
    record = interrupted_record(begun("r1"))
    assert record.created_at == ADMITTED
    assert (record.workspace_id, record.request_id, record.kind) == (1, "r1", "request")
    assert record.payload is None
    fields = record.fields
    assert (fields["fate"], fields["status"], fields["response_sha256"]) == (
        "interrupted",
        0,
        None,
    )
    assert (fields["request_sha256"], fields["key_id"]) == ("ab" * 32, 7)


def test_a_full_journal_is_rewritten_with_the_open_requests_only(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, "live", rotate_lines=4)
    journal.begin(begun("held"))
    for number in range(10):
        journal.begin(begun(f"r{number}"))
        journal.end(f"r{number}")
    journal.begin(begun("last"))
    kept = lines(journal.path)
    journal.close()
    assert len(kept) <= 4
    assert [one.request_id for one in open_requests([journal.path])] == [
        "held",
        "last",
    ]


def test_a_rotated_journal_is_one_locked_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "live", rotate_lines=2)
    for number in range(5):
        journal.begin(begun(f"r{number}"))
    orphans = Orphans(tmp_path)
    orphans.claim(lambda name: True)
    names = sorted(path.name for path in tmp_path.iterdir())
    journal.close()
    assert (names, orphans.paths) == (["inflight-live-3.jsonl"], [])


def test_a_successor_reads_both_files_of_a_rotation_cut_off_by_a_kill(
    tmp_path: Path,
) -> None:
    """Killed after the new generation was written, before the old one was
    deleted: each open request is found once, an ended one not at all."""
    old = left_behind(tmp_path, "r1", "r2", "r3", ended=("r2",))
    new = tmp_path / "inflight-dead-2.jsonl"
    new.write_bytes(begun("r1").line() + begun("r3").line())
    new.write_bytes(new.read_bytes() + b'{"event":"ended","request_id":"r3"}\n')
    orphans = Orphans(tmp_path)
    orphans.claim(lambda name: name == "dead")
    assert orphans.paths == [old, new]
    assert [one.request_id for one in open_requests(orphans.paths)] == ["r1"]


def test_a_graceful_close_with_nothing_open_deletes_the_journal(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, "live")
    journal.begin(begun("r1"))
    journal.end("r1")
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_graceful_close_leaves_open_requests_to_a_successor(tmp_path: Path) -> None:
    path = left_behind(tmp_path, "r1")
    orphans = Orphans(tmp_path)
    orphans.claim(lambda name: True)
    assert orphans.paths == [path]
    orphans.done()
    assert list(tmp_path.iterdir()) == []


def test_a_stray_rotation_file_is_removed_by_a_successor(tmp_path: Path) -> None:
    (tmp_path / ".inflight-0123.tmp").write_bytes(b"")
    Orphans(tmp_path).claim(lambda name: True)
    assert list(tmp_path.iterdir()) == []


# -- a successor's writer, on SQLite and PostgreSQL --------------------------------


async def stored(database: Database, count: int) -> list[dict[str, object]]:
    """The stored records, once there are ``count`` or the wait is over."""
    sql = "SELECT record FROM audit_record ORDER BY seq"
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    rows = await database.fetch(sql)
    while len(rows) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        rows = await database.fetch(sql)
    return [json.loads(row["record"]) for row in rows]


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def successor(database: Database, directory: Path) -> AuditWriter:
    writer = AuditWriter(database, audit_spool(directory))
    writer.start()
    return writer


@pytest.mark.anyio
async def test_a_successor_records_each_open_request_as_interrupted(
    tmp_path: Path, database: Database
) -> None:
    workspace = (await create_workspace(database, "acme")).id
    spool = tmp_path / "spool"
    journal = Journal(spool, "dead")
    for request_id in ("r1", "r2", "r3"):
        journal.begin(begun(request_id, workspace))
    journal.end("r2")
    journal.close()

    writer = await successor(database, spool)
    found = await stored(database, 2)
    await writer.close()

    assert [(r["request_id"], r["fate"], r["status"]) for r in found] == [
        ("r1", "interrupted", 0),
        ("r3", "interrupted", 0),
    ]
    assert [report.ok for report in await verify(database)] == [True]
    assert files(spool) == []


@pytest.mark.anyio
async def test_an_open_request_whose_record_was_committed_is_not_recorded_twice(
    tmp_path: Path, database: Database
) -> None:
    workspace = (await create_workspace(database, "acme")).id
    spool = tmp_path / "spool"
    committed = PendingRecord(workspace, "r1", "request", ADMITTED, {"fate": "served"})
    await append(database, [committed])
    journal = Journal(spool, "dead")
    journal.begin(begun("r1", workspace))
    journal.begin(begun("r2", workspace))
    journal.close()

    writer = await successor(database, spool)
    found = await stored(database, 2)
    await writer.close()

    assert [(r["request_id"], r["fate"]) for r in found] == [
        ("r1", "served"),
        ("r2", "interrupted"),
    ]


@pytest.mark.anyio
async def test_a_journal_waits_for_its_spool_file_to_be_adopted(
    tmp_path: Path, database: Database
) -> None:
    """While another live process holds the dead process's spool file, its
    journal is left alone, so no stand-in can precede the real record."""
    workspace = (await create_workspace(database, "acme")).id
    spool = tmp_path / "spool"
    journal = Journal(spool, "dead")
    journal.begin(begun("r1", workspace))
    journal.close()
    adopter = (spool / "audit-dead.jsonl").open("ab")
    fcntl.flock(adopter, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        writer = await successor(database, spool)
        await asyncio.sleep(0.3)
        found = await stored(database, 0)
        await writer.close()
    finally:
        adopter.close()
    assert (found, files(spool)) == (
        [],
        ["audit-dead.jsonl", "inflight-dead-1.jsonl"],
    )


def spooled(directory: Path) -> int:
    return sum(
        len(path.read_bytes().splitlines()) for path in directory.glob("audit-*.jsonl")
    )


async def spooled_soon(directory: Path, count: int) -> int:
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    found = spooled(directory)
    while found < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        found = spooled(directory)
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_interrupted_records_are_spooled_while_the_table_is_locked(
    tmp_path: Path, database: Database, database_url: str
) -> None:
    """The successor cannot commit (the audit table is locked): the stand-in
    goes to its spool, the journal is deleted, and the record is committed
    once the lock is gone."""
    workspace = (await create_workspace(database, "acme")).id
    spool = tmp_path / "spool"
    journal = Journal(spool, "dead")
    journal.begin(begun("r1", workspace))
    journal.close()

    with table_locked(database_url, "audit_record"):
        writer = await successor(database, spool)
        assert await spooled_soon(spool, 1) == 1
        assert [name for name in files(spool) if name.startswith("inflight-")] == []
    found = await stored(database, 1)
    await writer.close()

    assert [(r["request_id"], r["fate"]) for r in found] == [("r1", "interrupted")]
    assert files(spool) == []
