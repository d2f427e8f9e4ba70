"""Writing the ledger rows of Redis-settled requests without holding them up.

A settlement hands its request's row to :meth:`LedgerWriter.write`, which
waits at most ``timeout_seconds`` for the database, even one that hangs
(``core/db/bounded.py``).  A row the database does
not take in that time (a locked ``usage`` table, an outage) is kept twice: in
memory, where a background task retries it every ``retry_seconds``, and in
this process's ledger spool file (``<spool dir>/ledger-<random>.jsonl``,
fsync'd; ``core/spool.py``), so that it outlives the process.  While rows
wait, new rows queue behind them without trying, so a stuck database holds
neither the settlements nor more than one connection.

Once every row in memory is written the spool file is emptied.  A process
that stops first leaves its file behind; the next gateway or worker to start
on the same spool directory adopts it (:meth:`LedgerWriter.start`) and writes
its rows.  Writing a row twice is harmless (``ON CONFLICT (request_id) DO
NOTHING``), so a file replayed twice, or holding rows already written, costs
nothing but the attempt.

Memory holds at most ``MAX_WAITING`` rows; beyond, the oldest leave memory
but stay in the file, which is then replayed whole once memory has drained.
A row is lost only if the spool directory cannot be written (logged).

The Redis counters learn the spend at once either way; only a counter rebuilt
from the ledger while rows wait misses them until its window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.errors import StorageError
from sluicegate.core.spool import Kind, Spool

if TYPE_CHECKING:
    from pathlib import Path

    from sluicegate.core.db.database import Database

log = logging.getLogger(__name__)

WRITE_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 1.0
MAX_WAITING = 100_000
"""Rows kept in memory at most; beyond, the oldest are kept only on disk."""

KIND: Kind[Entry] = Kind(
    prefix="ledger", noun="ledger rows", encode=Entry.to_json, decode=Entry.from_json
)


def ledger_spool(directory: Path) -> Spool[Entry]:
    """A new spool file for this process's ledger writer in ``directory``."""
    return Spool(directory, KIND)


class LedgerWriter:
    """Writes ledger rows, keeping those the database does not take in time."""

    def __init__(
        self,
        database: Database,
        spool: Spool[Entry],
        *,
        timeout_seconds: float = WRITE_TIMEOUT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.database = database
        self.spool = spool
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.max_waiting = max_waiting
        self.waiting: deque[Entry] = deque()
        self.spilled = False
        """Some rows of our own spool file are no longer in memory."""
        self._files = asyncio.Lock()
        self._retrier: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Adopt the ledger spools of stopped processes and write their rows."""
        async with self._files:
            await asyncio.to_thread(self.spool.claim_orphans)
        if self.spool.pending:
            self._retry_soon()

    async def close(self) -> None:
        """Stop retrying; rows not yet written stay in the spool file."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        if self.waiting:
            log.warning(
                "stopping with %d ledger rows not yet written; they wait in %s "
                "for the next process on that spool directory",
                len(self.waiting),
                self.spool.path,
            )
        async with self._files:
            await asyncio.to_thread(self.spool.close)

    async def write(self, entry: Entry) -> None:
        """Write ``entry`` now, or keep it for the background task."""
        if self.waiting:
            await self._keep(entry)
            return
        failure = await self._attempt(entry)
        if failure is not None:
            log.warning(
                "the ledger row of request %s is not written yet (%s); it and "
                "the rows after it are spooled and retried in the background",
                entry.request_id,
                failure,
            )
            await self._keep(entry)

    async def _attempt(self, entry: Entry) -> str | None:
        """Write ``entry``; None, or why it is not written."""
        try:
            await self.database.within(
                self.timeout_seconds, ledger.record(self.database, entry)
            )
        except TimeoutError:
            return f"the database did not answer in {self.timeout_seconds}s"
        except StorageError as exc:
            return str(exc)
        return None

    async def _keep(self, entry: Entry) -> None:
        """Hold ``entry`` in memory and in the spool file until it is written.

        Memory first: the spool file is emptied only when memory is, so every
        row in the file is in memory or written (or ``spilled`` is set).
        """
        if len(self.waiting) >= self.max_waiting:
            self.waiting.popleft()
            if not self.spilled:
                log.warning(
                    "%d ledger rows wait for the database; older ones are kept "
                    "only in %s from now on",
                    self.max_waiting,
                    self.spool.path,
                )
            self.spilled = True
        self.waiting.append(entry)
        self._retry_soon()
        try:
            async with self._files:
                await asyncio.to_thread(self.spool.append, [entry])
        except StorageError as exc:
            log.error(
                "the ledger row of request %s waits in memory only and is lost "
                "if this process stops before the database answers: %s",
                entry.request_id,
                exc,
            )

    def _retry_soon(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        while self.waiting or self.spool.pending:
            await asyncio.sleep(self.retry_seconds)
            if await self._drain_memory():
                await self._drain_files()
        log.info("every ledger row that waited for the database is written")

    async def _drain_memory(self) -> bool:
        """Write the rows in memory, oldest first; whether all went in."""
        while self.waiting:
            if await self._attempt(self.waiting[0]) is not None:
                return False
            self.waiting.popleft()
        return True

    async def _drain_files(self) -> None:
        """Write what only spool files hold, then let the files go."""
        async with self._files:
            if self.waiting:  # a row arrived meanwhile; the next round
                return
            await asyncio.to_thread(self.spool.claim_orphans)
            for path in self.spool.files():
                if path == self.spool.path and not self.spilled:
                    await asyncio.to_thread(self.spool.done, path)
                    continue
                if not await self._replay(path):
                    return
                if path == self.spool.path:
                    self.spilled = False

    async def _replay(self, path: Path) -> bool:
        """Write every row of ``path`` and remove it; whether that worked."""
        rows = await asyncio.to_thread(self.spool.read, path)
        for row in rows:
            failure = await self._attempt(row)
            if failure is not None:
                log.warning("cannot replay ledger spool %s yet: %s", path, failure)
                return False
        await asyncio.to_thread(self.spool.done, path)
        log.info("wrote %d ledger rows spooled in %s", len(rows), path)
        return True
