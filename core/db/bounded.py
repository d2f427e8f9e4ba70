"""Waiting for the database no longer than a deadline, even when it hangs.

``asyncio.wait_for`` cancels the work at its deadline and then waits for the
work to stop.  A cancelled asyncpg query stops only once the server has
answered the cancellation, so against a server that holds its connections
open and answers nothing (paused, or behind a network black hole) that wait
lasts as long as the hang.  :func:`within` (called as
:meth:`Database.within <sluicegate.core.db.database.Database.within>`, which
holds the ``abandoned`` set) stops waiting at the deadline: the work is
cancelled and left to end on its own, kept in ``abandoned`` until then.
Its connection is lost to the pool until the server answers, which bounds
how many pieces of work can pile up (the pool's size).

Only for work whose late completion is harmless: a write that is also
spooled and deduplicated on replay, say.  The request path uses it (key
lookups, budgets kept in the database, audit and ledger writes, /readyz).

TODO(db-hang): the admin API, the CLI, workers and retention jobs still wait
for a hanging database until its connections break.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def within(
    seconds: float,
    work: Coroutine[Any, Any, T],
    abandoned: set[asyncio.Task[Any]],
) -> T:
    """``work``'s result, or TimeoutError ``seconds`` from now at the latest."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task, abandoned)
        raise
    if task in done:
        return task.result()
    _abandon(task, abandoned)
    raise TimeoutError(f"the database did not answer in {seconds}s")


def _abandon(task: asyncio.Task[Any], abandoned: set[asyncio.Task[Any]]) -> None:
    task.cancel()
    abandoned.add(task)
    task.add_done_callback(lambda ended: _forget(ended, abandoned))


def _forget(task: asyncio.Task[Any], abandoned: set[asyncio.Task[Any]]) -> None:
    abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned database work ended with %r", task.exception())
