"""The ledger writer keeps rows the database does not take, on disk too.

The ``usage`` table is locked from another connection so that every write
times out, as it would in an outage; the gateway-level version (a real
PostgreSQL stopped, a gateway stopped while it is down) is in
``test_faults_outages.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.ledger_writer import LedgerWriter, ledger_spool
from sluicegate.core.context import Usage
from sluicegate.core.db.database import Database
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.throwaway import table_locked

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]

FAST = {"timeout_seconds": 0.2, "retry_seconds": 0.1}
WAIT_SECONDS = 15.0


def entry(request_id: str, workspace_id: int) -> Entry:
    return Entry(
        request_id=request_id,
        workspace_id=workspace_id,
        key_id=None,
        model="gpt-4o-mini",
        target="openai",
        status=200,
        usage=Usage(prompt_tokens=7, completion_tokens=3, cached_tokens=1),
        cost_micros=1234,
        admitted_at=datetime.now(UTC),
    )


def spooled(directory: Path) -> int:
    return sum(
        len(path.read_bytes().splitlines()) for path in directory.glob("ledger-*")
    )


def leftover(directory: Path) -> list[Path]:
    return list(directory.glob("ledger-*"))


async def drained(writer: LedgerWriter) -> None:
    """Return once the writer's spool is empty, or when the wait is over."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if not writer.spool.pending or time.monotonic() > deadline:
            return
        await anyio.sleep(0.1)


async def rows(database: Database, count: int) -> list[dict[str, object]]:
    """The ledger's rows once there are ``count``, or when the wait is over."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = await database.fetch(
            "SELECT request_id, prompt_tokens, completion_tokens, cached_tokens, "
            "cost_micros FROM usage ORDER BY request_id"
        )
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await anyio.sleep(0.1)


async def test_rows_a_stopped_process_could_not_write_are_written_by_the_next(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    workspace = await create_workspace(database, "acme")
    first = LedgerWriter(database, ledger_spool(tmp_path), **FAST)
    with table_locked(database_url, "usage"):
        for n in range(3):
            await first.write(entry(f"r{n}", workspace.id))
        assert len(first.waiting) == 3
        assert spooled(tmp_path) == 3
        await first.close()
    assert spooled(tmp_path) == 3

    second = LedgerWriter(database, ledger_spool(tmp_path), **FAST)
    await second.start()
    written = await rows(database, 3)
    await second.close()

    assert [row["request_id"] for row in written] == ["r0", "r1", "r2"]
    assert {
        (
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cached_tokens"],
            row["cost_micros"],
        )
        for row in written
    } == {(7, 3, 1, 1234)}
    assert leftover(tmp_path) == []


async def test_rows_beyond_memory_are_written_from_the_spool_file(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    workspace = await create_workspace(database, "acme")
    writer = LedgerWriter(database, ledger_spool(tmp_path), max_waiting=2, **FAST)
    with table_locked(database_url, "usage"):
        for n in range(5):
            await writer.write(entry(f"r{n}", workspace.id))
        assert len(writer.waiting) == 2
        assert writer.spilled
        assert spooled(tmp_path) == 5

    written = await rows(database, 5)
    await drained(writer)
    await writer.close()

    assert [row["request_id"] for row in written] == [f"r{n}" for n in range(5)]
    assert not writer.spilled
    assert leftover(tmp_path) == []


async def test_a_ledger_spool_is_adopted_by_one_process_only(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    workspace = await create_workspace(database, "acme")
    first = LedgerWriter(database, ledger_spool(tmp_path), **FAST)
    with table_locked(database_url, "usage"):
        await first.write(entry("r0", workspace.id))
        live = LedgerWriter(database, ledger_spool(tmp_path), **FAST)
        await live.start()
        assert not live.spool.pending  # the first writer still holds its file
        await first.close()
        await live.start()
        assert live.spool.pending  # now stopped: adopted
        await live.close()
    assert spooled(tmp_path) == 1
