"""One task per process that commits audit records in batches.

A request hands its record to :meth:`AuditWriter.submit` and waits: the record
is *kept* once its batch has committed, or, when the database cannot be
reached, once it is fsync'd in the local spool (:mod:`.spool`).  Requests that
end while a batch commits queue up and go together in the next transaction,
so one commit serves many requests.

While any record waits in the spool, new records are spooled behind it, so a
workspace's records reach the database in the order they were kept.  The
writer retries the spool every ``retry_seconds``; a replayed record whose
request id is already stored is skipped.

The writer also owns the process's start-of-request journal
(:mod:`.inflight`).  When it starts, and whenever it replays the spool, it
adopts the journals of stopped processes (only once their spool files are
adopted or gone) and keeps an ``interrupted`` record for every request they
began and never ended, through the same commit-or-spool path with the
replay's request-id dedupe; then it deletes those journals.

The writer is shared by every ``audit`` stage of a process: :func:`acquire`
creates it on first use (under :data:`EXTRAS_KEY` in ``Services.extras``) and
:meth:`AuditWriter.release` closes it when the last stage lets go, after
committing or spooling what it still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.inflight import (
    Journal,
    Orphans,
    interrupted_record,
    open_requests,
)
from sluicegate.core.audit.record import PendingRecord
from sluicegate.core.audit.spool import audit_spool
from sluicegate.core.db.database import Database, driver_errors
from sluicegate.core.errors import StorageError
from sluicegate.core.spool import Spool

if TYPE_CHECKING:
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

EXTRAS_KEY = "sluicegate.audit.writer"
BATCH_SIZE = 200
COMMIT_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 1.0
CLOSE_TIMEOUT_SECONDS = 30.0


@dataclass
class _Entry:
    record: PendingRecord
    kept: asyncio.Future[None]


class AuditWriter:
    """Batches records into transactions; spools them while the DB is away."""

    def __init__(
        self,
        database: Database,
        spool: Spool[PendingRecord],
        *,
        batch_size: int = BATCH_SIZE,
        retry_seconds: float = RETRY_SECONDS,
        journal: Journal | None = None,
    ) -> None:
        self.database = database
        self.spool = spool
        self.journal = journal or Journal(spool.directory, _name_of(spool))
        """This process's requests begun and not yet recorded."""
        self.orphan_journals = Orphans(spool.directory)
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.users = 0
        self.degraded = False
        """True while the database refuses records (they go to the spool)."""
        self._queue: asyncio.Queue[_Entry | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, record: PendingRecord) -> None:
        """Return once ``record`` is committed or spooled; StorageError if neither."""
        self.start()
        entry = _Entry(record, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(entry)
        await entry.kept

    def start(self) -> None:
        """Start the writer task (adopting orphaned spools) if not yet running."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._claim_orphans()
            self._task = loop.create_task(self._run())

    async def release(self) -> None:
        """A stage lets go; the last one closes the writer."""
        self.users -= 1
        if self.users == 0:
            await self.close()

    async def close(self) -> None:
        """Keep every queued record, then stop the task and the spool."""
        if self._task is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(self._task, CLOSE_TIMEOUT_SECONDS)
            except TimeoutError:
                log.error(
                    "the audit writer did not finish in time; records "
                    "still queued were neither committed nor spooled"
                )
            self._task = None
        self.journal.close()
        self.orphan_journals.close()
        await asyncio.to_thread(self.spool.close)

    # -- the task ------------------------------------------------------------

    async def _run(self) -> None:
        if self.spool.pending:
            await self._replay()
        await self._record_interrupted()
        while True:
            batch, stop = await self._next_batch()
            if self.spool.pending:
                await self._replay()
            if batch:
                await self._keep(batch)
            if stop:
                return

    async def _next_batch(self) -> tuple[list[_Entry], bool]:
        timeout = self.retry_seconds if self.spool.pending else None
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return [], False
        batch: list[_Entry] = []
        item = first
        while item is not None:
            batch.append(item)
            if len(batch) >= self.batch_size or self._queue.empty():
                return batch, False
            item = self._queue.get_nowait()
        return batch, True

    async def _keep(self, batch: list[_Entry]) -> None:
        records = [entry.record for entry in batch]
        try:
            if self.spool.pending or not await self._commit(records):
                await asyncio.to_thread(self.spool.append, records)
        except StorageError as exc:
            log.error("%d audit records are lost: %s", len(records), exc)
            for entry in batch:
                _settle(entry.kept, exc)
            return
        for entry in batch:
            _settle(entry.kept, None)

    async def _commit(
        self, records: list[PendingRecord], *, replay: bool = False
    ) -> bool:
        """Append to the database; False (and degraded) if it cannot be reached."""
        # TODO(audit-poison): every driver error counts as "unreachable", so a
        # record the database refuses for good (a bug) stays in the spool and
        # is retried forever, holding back the records spooled after it.
        unreachable: tuple[type[BaseException], ...] = (
            StorageError,
            *driver_errors(),
        )
        try:
            await self.database.within(
                COMMIT_TIMEOUT_SECONDS, append(self.database, records, replay=replay)
            )
        except unreachable as exc:
            if not self.degraded:
                log.warning(
                    "cannot commit audit records (%s: %s); spooling them to %s "
                    "until the database answers",
                    type(exc).__name__,
                    exc,
                    self.spool.directory,
                )
            self.degraded = True
            return False
        self.degraded = False
        return True

    async def _replay(self) -> None:
        self._claim_orphans()
        for path in self.spool.files():
            records = await asyncio.to_thread(self.spool.read, path)
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                if not await self._commit(chunk, replay=True):
                    return
            await asyncio.to_thread(self.spool.done, path)
            log.info("replayed %d spooled audit records from %s", len(records), path)
        await self._record_interrupted()

    def _claim_orphans(self) -> None:
        """Adopt stopped processes' spools, then the journals that may follow."""
        self.spool.claim_orphans()
        adopted = set(self.spool.files())

        def may_take(name: str) -> bool:
            spool_file = self.spool.directory / f"audit-{name}.jsonl"
            return spool_file in adopted or not spool_file.exists()

        self.orphan_journals.claim(may_take)

    async def _record_interrupted(self) -> None:
        """Keep an ``interrupted`` record for every request the adopted
        journals show begun and never ended, then delete those journals."""
        paths = self.orphan_journals.paths
        if not paths:
            return
        begun = await asyncio.to_thread(open_requests, paths)
        records = [interrupted_record(one) for one in begun]
        try:
            await self._commit_or_spool(records)
        except StorageError as exc:
            log.error("interrupted requests are not recorded yet: %s", exc)
            return
        await asyncio.to_thread(self.orphan_journals.done)
        if records:
            log.info("recorded %d requests a stopped process cut off", len(records))

    async def _commit_or_spool(self, records: list[PendingRecord]) -> None:
        """Commit replayed records (dedupe on), spooling what cannot commit."""
        for start in range(0, len(records), self.batch_size):
            rest = records[start:]
            chunk = rest[: self.batch_size]
            if self.spool.pending or not await self._commit(chunk, replay=True):
                await asyncio.to_thread(self.spool.append, rest)
                return


def _name_of(spool: Spool[PendingRecord]) -> str:
    """The random part of the spool file's name, which its journal shares."""
    return spool.path.stem.removeprefix("audit-")


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def acquire(services: Services) -> AuditWriter:
    """The process's writer, created on first use; pair with ``release``."""
    writer = services.extras.get(EXTRAS_KEY)
    if writer is None:
        spool = audit_spool(services.settings.spool_dir)
        writer = AuditWriter(services.database, spool)
        services.extras[EXTRAS_KEY] = writer
    assert isinstance(writer, AuditWriter)
    writer.users += 1
    with contextlib.suppress(RuntimeError):
        writer.start()
    return writer


async def release(services: Services, writer: AuditWriter) -> None:
    """Let go of the writer; the last user closes it and forgets it."""
    await writer.release()
    if writer.users == 0 and services.extras.get(EXTRAS_KEY) is writer:
        del services.extras[EXTRAS_KEY]
