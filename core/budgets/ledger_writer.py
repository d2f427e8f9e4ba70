"""Writing the ledger rows of Redis-settled requests without holding them up.

A settlement hands its request's row to :meth:`LedgerWriter.write`, which
waits at most ``timeout_seconds`` for the database.  A row the database does
not take in that time (a locked ``usage`` table, an outage) waits in memory,
and a background task writes it, retrying every ``retry_seconds`` until it
goes in.  While rows wait, new rows queue behind them without trying, so a
stuck database holds neither the settlements nor more than one connection.
Writing a row twice is harmless (``ON CONFLICT (request_id) DO NOTHING``).

The Redis counters learn the spend at once either way; only a counter rebuilt
from the ledger while rows wait misses them until its window ends.

TODO(ledger-spool): rows still waiting when the process stops are lost (each
is logged); spool them to disk like the audit writer does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from sluicegate.core.budgets import ledger
from sluicegate.core.errors import StorageError

if TYPE_CHECKING:
    from sluicegate.core.budgets.ledger import Entry
    from sluicegate.core.db.database import Database

log = logging.getLogger(__name__)

WRITE_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 1.0
MAX_WAITING = 100_000
"""Rows kept in memory at most; beyond, the oldest is dropped (and logged)."""


class LedgerWriter:
    """Writes ledger rows, keeping those the database does not take in time."""

    def __init__(
        self,
        database: Database,
        *,
        timeout_seconds: float = WRITE_TIMEOUT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.database = database
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.waiting: deque[Entry] = deque()
        self._retrier: asyncio.Task[None] | None = None

    async def write(self, entry: Entry) -> None:
        """Write ``entry`` now, or keep it for the background task."""
        if self.waiting:
            self._keep(entry)
            return
        failure = await self._attempt(entry)
        if failure is not None:
            log.warning(
                "the ledger row of request %s is not written yet (%s); it and "
                "the rows after it are retried in the background",
                entry.request_id,
                failure,
            )
            self._keep(entry)

    async def _attempt(self, entry: Entry) -> str | None:
        """Write ``entry``; None, or why it is not written."""
        try:
            await asyncio.wait_for(
                ledger.record(self.database, entry), self.timeout_seconds
            )
        except TimeoutError:
            return f"the database did not answer in {self.timeout_seconds}s"
        except StorageError as exc:
            return str(exc)
        return None

    def _keep(self, entry: Entry) -> None:
        if len(self.waiting) >= MAX_WAITING:
            dropped = self.waiting.popleft()
            log.error(
                "%d ledger rows wait for the database; the row of request %s is lost",
                MAX_WAITING,
                dropped.request_id,
            )
        self.waiting.append(entry)
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        while self.waiting:
            await asyncio.sleep(self.retry_seconds)
            while self.waiting and await self._attempt(self.waiting[0]) is None:
                self.waiting.popleft()
        log.info("every ledger row that waited for the database is written")
