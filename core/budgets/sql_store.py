"""Budget admission in the database: the embedded default and Redis's fallback.

One transaction admits a request: it locks the request's counters, drops
expired holds, sums each counter's window from the usage ledger plus its live
holds in ``budget_hold``, and inserts a hold on every counter only if every
one has room.  Settling deletes the request's holds and writes its ledger row
in one transaction under the same locks, so an admission never sees a
request both as a hold and as spend, nor as neither.  If that transaction
fails (the database is down, the ledger locked past the lock timeout), the
row goes to the ledger writer, which retries it and spools it to disk
(``ledger_writer.py``), and the holds stay until they expire: until then the
request counts twice, too much and never too little.

Locks: SQLite begins the transaction IMMEDIATE, so writers queue one at a
time.  PostgreSQL takes a transaction-scoped advisory lock per counter, in
key order so two requests never wait on each other crosswise; requests on
different counters do not wait at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry, db_time
from sluicegate.core.budgets.store import Claim, Refusal
from sluicegate.core.db.database import LOCK_TIMEOUT_SECONDS, storage_errors
from sluicegate.core.errors import InfrastructureError, StorageError

if TYPE_CHECKING:
    from sluicegate.core.budgets.ledger_writer import LedgerWriter
    from sluicegate.core.budgets.limits import Counter
    from sluicegate.core.db.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_TIMEOUT_SECONDS = 2 * LOCK_TIMEOUT_SECONDS + 2.0
"""An admission or settlement fails after this long, even against a database
that hangs (``core/db/bounded.py``): it may wait the lock timeout for its
counters' advisory locks and as long again for a locked table.  A transaction
given up on ends on its own; if it commits after all, its hold expires, and
a settlement's ledger row is deduplicated."""
LOCK_CLASS = 0x5347
"""First half of the two-integer advisory lock key of budget counters; the
two-integer key space never meets the one-bigint keys of migrations."""


# A table locked by someone else fails a statement here after the database's
# lock timeout (LOCK_TIMEOUT_SECONDS in core/db/database.py, or SQLite's busy
# timeout), and the budget stage's on_failure decides.
class SqlBudgetStore:
    """Holds in ``budget_hold``, spend in the usage ledger; see the docstring."""

    name = "database"

    def __init__(self, database: Database, ledger_writer: LedgerWriter) -> None:
        self.database = database
        self.ledger_writer = ledger_writer
        self._local: AbstractAsyncContextManager[object] = (
            asyncio.Lock() if database.is_sqlite else nullcontext()
        )

    async def reserve(
        self, request_id: str, claims: list[Claim], hold_seconds: float
    ) -> Refusal | None:
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=hold_seconds)

        async def admit() -> Refusal | None:
            async with self._transaction([claim.counter for claim in claims]):
                await self._drop_expired(now)
                refusal = await self._refusal(claims)
                if refusal is None:
                    await self._hold(request_id, claims, expires)
                return refusal

        return await self._bounded(admit())

    async def settle(
        self, request_id: str, charges: list[Claim], entry: Entry | None
    ) -> None:
        async def release() -> None:
            async with self._transaction([charge.counter for charge in charges]):
                with storage_errors(f"releasing the holds of {request_id}"):
                    await self.database.fetch(
                        "DELETE FROM budget_hold WHERE request_id = {}", request_id
                    )
                if entry is not None:
                    await ledger.record(self.database, entry)

        try:
            await self._bounded(release())
        except InfrastructureError:
            if entry is not None:
                await self.ledger_writer.write(entry)
            raise

    async def _bounded(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result; its storage failure, or no answer in
        ``STORE_TIMEOUT_SECONDS``, as InfrastructureError."""
        try:
            return await self.database.within(STORE_TIMEOUT_SECONDS, work)
        except (StorageError, TimeoutError) as exc:
            raise InfrastructureError("database", str(exc)) from exc

    async def reserved(self, counter: Counter) -> int:
        """The live holds on ``counter``."""
        with storage_errors(f"summing the holds of {counter.key}"):
            rows = await self.database.fetch(
                "SELECT COALESCE(SUM(amount), 0) AS held FROM budget_hold "
                "WHERE counter = {} AND expires_at > {}",
                counter.key,
                db_time(self.database, datetime.now(UTC)),
            )
        return int(rows[0]["held"])

    @asynccontextmanager
    async def _transaction(self, counters: list[Counter]) -> AsyncIterator[None]:
        """A transaction holding the locks of ``counters``.

        On SQLite this process's requests also queue on an in-process lock,
        so they wait without each holding a connection and its thread.
        """
        async with self._local:
            with storage_errors("a budget transaction"):
                async with self.database.transaction():
                    await self._lock(counters)
                    yield

    async def _lock(self, counters: list[Counter]) -> None:
        if not self.database.is_postgres:
            return  # the IMMEDIATE transaction holds SQLite's write lock
        for key in sorted({counter.key for counter in counters}):
            await self.database.fetch(
                "SELECT pg_advisory_xact_lock({}, hashtext({}))", LOCK_CLASS, key
            )

    async def _drop_expired(self, now: datetime) -> None:
        with storage_errors("dropping expired budget holds"):
            dropped = await self.database.fetch(
                "DELETE FROM budget_hold WHERE expires_at <= {} RETURNING request_id",
                db_time(self.database, now),
            )
        if dropped:
            log.info("released %d expired budget holds", len(dropped))

    async def _refusal(self, claims: list[Claim]) -> Refusal | None:
        for claim in claims:
            spent = await ledger.spent(self.database, claim.counter)
            held = await self.reserved(claim.counter)
            if spent + held + claim.amount > claim.counter.limit:
                return Refusal(claim.counter, spent, held, claim.amount)
        return None

    async def _hold(
        self, request_id: str, claims: list[Claim], expires: datetime
    ) -> None:
        with storage_errors(f"reserving budget for {request_id}"):
            for claim in claims:
                await self.database.fetch(
                    "INSERT INTO budget_hold (counter, request_id, amount, expires_at)"
                    " VALUES ({}, {}, {}, {})",
                    claim.counter.key,
                    request_id,
                    claim.amount,
                    db_time(self.database, expires),
                )
