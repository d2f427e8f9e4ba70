"""Waiting for database work stops at the deadline even when the work does not.

A cancelled asyncpg query ends only once the server acknowledges the
cancellation; ``stubborn`` stands for one against a hung server.  The
gateway-level proof is the paused-PostgreSQL test in test_faults_outages.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from sluicegate.core.db.bounded import within

pytestmark = pytest.mark.anyio


async def stubborn(acknowledged: asyncio.Event) -> str:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await acknowledged.wait()
        raise
    return "never"


async def test_a_wait_ends_at_its_deadline_and_keeps_the_work_until_it_ends() -> None:
    acknowledged = asyncio.Event()
    abandoned: set[asyncio.Task[Any]] = set()

    with anyio.fail_after(10):  # a hang, not a speed limit
        with pytest.raises(TimeoutError, match=r"did not answer in 0\.05s"):
            await within(0.05, stubborn(acknowledged), abandoned)
    assert len(abandoned) == 1

    [task] = abandoned
    acknowledged.set()
    with anyio.fail_after(10):
        await asyncio.wait({task})
    await asyncio.sleep(0)  # the done callbacks run
    assert abandoned == set()


async def test_work_that_ends_in_time_gives_its_result() -> None:
    async def quick() -> str:
        return "row"

    abandoned: set[asyncio.Task[Any]] = set()
    assert await within(1.0, quick(), abandoned) == "row"
    assert abandoned == set()
