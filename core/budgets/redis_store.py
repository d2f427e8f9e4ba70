"""Budget counters in Redis, shared by every gateway process.

Each counter is a hash ``<prefix>:budget:<counter key>`` with ``spent``,
``reserved``, ``ready`` and one ``h:<request id>`` field per hold, and a
sorted set ``...:holds`` of the request ids that hold something, scored by
when their hold expires (in Redis's own clock).  One Lua script admits a
request: it first releases the expired holds of every counter the request
touches, then checks ``spent + reserved + estimate <= limit`` for all of them
and reserves on all of them, or on none.  Redis runs a script alone, so
however many requests race, across however many processes, no two see the
same room.

The ledger is the truth.  A counter Redis does not have (never used in this
window, evicted, or Redis restarted empty) is not ``ready``: the script says
so, and the store sums the ledger and installs the counter before trying
again.  A settlement writes the ledger row first and the counter second; if a
settlement lands on a counter that is being rebuilt it is counted twice until
the window ends (too much, never too little).  A settlement that cannot reach
Redis is remembered, and the counter is raised to the ledger's sum at the
next admission that reaches Redis again.

A hold Redis may keep for a request that will never settle there (its
settlement failed, or its admission timed out although Redis may still run
it, as a paused server does when it resumes) is remembered too and released
at that same admission, instead of waiting out ``hold_seconds``.  The ledger
row is written through :class:`~.ledger_writer.LedgerWriter`, which never
holds a settlement for longer than its timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from redis.commands.core import AsyncScript
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.ledger_writer import LedgerWriter
from sluicegate.core.budgets.store import Claim, Refusal
from sluicegate.core.errors import InfrastructureError, StorageError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from sluicegate.core.budgets.limits import Counter
    from sluicegate.core.db.database import Database
    from sluicegate.core.redis_guard import RedisGuard

log = logging.getLogger(__name__)

KEEP_AFTER_WINDOW_SECONDS = 2 * 86_400
"""How long a counter outlives its window, for late settlements."""

MAX_CONCURRENT_CALLS = 16
"""Budget scripts one process runs on Redis at a time.  A burst of requests
queues here, untimed, instead of opening a connection each and timing out
together under the guard's short timeout; one script takes well under a
millisecond, so the queue drains fast."""
MAX_UNRELEASED = 10_000
"""Requests whose holds are remembered for release at most; beyond, the oldest
is forgotten and its holds expire after ``hold_seconds``."""
RELEASES_PER_CALL = 500
_PURGE = """
local function purge(c, e, now)
  local expired = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  for _, rid in ipairs(expired) do
    local held = redis.call('HGET', c, 'h:' .. rid)
    if held then
      redis.call('HINCRBY', c, 'reserved', -tonumber(held))
      redis.call('HDEL', c, 'h:' .. rid)
    end
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', e, '-inf', now) end
  return #expired
end
"""

RESERVE = (
    _PURGE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid, hold = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 2
local expired = 0
for i = 1, n do
  if redis.call('HGET', KEYS[2 * i - 1], 'ready') ~= '1' then
    return {'missing', i, 0, 0, 0}
  end
  expired = expired + purge(KEYS[2 * i - 1], KEYS[2 * i], now)
end
for i = 1, n do
  local c = KEYS[2 * i - 1]
  local limit, amount = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local spent = tonumber(redis.call('HGET', c, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', c, 'reserved') or '0')
  if spent + reserved + amount > limit then
    return {'refused', i, spent, reserved, expired}
  end
end
for i = 1, n do
  local c, e = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', c, 'reserved', ARGV[3 * i + 1])
  redis.call('HSET', c, 'h:' .. rid, ARGV[3 * i + 1])
  redis.call('ZADD', e, now + hold, rid)
  redis.call('EXPIREAT', e, ARGV[3 * i + 2])
end
return {'ok', 0, 0, 0, expired}
"""
)

SETTLE = """
local rid = ARGV[1]
for i = 1, #KEYS / 2 do
  local c, e = KEYS[2 * i - 1], KEYS[2 * i]
  local held = redis.call('HGET', c, 'h:' .. rid)
  if held then
    redis.call('HINCRBY', c, 'reserved', -tonumber(held))
    redis.call('HDEL', c, 'h:' .. rid)
  end
  redis.call('ZREM', e, rid)
  local actual = tonumber(ARGV[2 * i])
  if actual > 0 then
    redis.call('HINCRBY', c, 'spent', actual)
    if redis.call('TTL', c) < 0 then redis.call('EXPIREAT', c, ARGV[2 * i + 1]) end
  end
end
return 1
"""

INSTALL = """
local c = KEYS[1]
if redis.call('HGET', c, 'ready') == '1' then
  local spent = tonumber(redis.call('HGET', c, 'spent') or '0')
  if tonumber(ARGV[1]) > spent then redis.call('HSET', c, 'spent', ARGV[1]) end
  return 0
end
redis.call('HINCRBY', c, 'spent', ARGV[1])
redis.call('HSET', c, 'ready', '1')
redis.call('EXPIREAT', c, ARGV[2])
return 1
"""


class RedisBudgetStore:
    """Counters and holds in Redis; see the module docstring."""

    name = "redis"

    def __init__(
        self, guard: RedisGuard, database: Database, ledger_writer: LedgerWriter
    ) -> None:
        self.guard = guard
        self.database = database
        self.stale: set[Counter] = set()
        """Counters whose settlement could not reach Redis."""
        self.unreleased: dict[str, list[Counter]] = {}
        """Requests whose holds Redis may keep although they will never settle
        there, with the counters they hold."""
        self.ledger_writer = ledger_writer
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self._rebuilding = asyncio.Lock()
        self._reserve = AsyncScript(guard.client, RESERVE)
        self._settle = AsyncScript(guard.client, SETTLE)
        self._install = AsyncScript(guard.client, INSTALL)

    async def reserve(
        self, request_id: str, claims: list[Claim], hold_seconds: float
    ) -> Refusal | None:
        await self._catch_up()
        keys = [key for claim in claims for key in self._keys(claim.counter)]
        args: list[Any] = [request_id, int(hold_seconds * 1000)]
        for claim in claims:
            args += [claim.counter.limit, claim.amount, _expire_at(claim.counter)]

        for _ in range(len(claims) + 1):
            try:
                status, index, spent, reserved, expired = await self._run(
                    self._reserve, keys, args
                )
            except InfrastructureError as exc:
                if _maybe_ran(exc):
                    self._remember(request_id, [claim.counter for claim in claims])
                raise
            if expired:
                log.info("released %d expired budget holds", expired)
            if status == b"ok":
                return None
            claim = claims[int(index) - 1]
            if status == b"refused":
                return Refusal(claim.counter, int(spent), int(reserved), claim.amount)
            await self._rebuild(claim.counter)
        raise InfrastructureError(
            "redis", "budget counters vanished while being rebuilt; retry"
        )

    async def settle(
        self, request_id: str, charges: list[Claim], entry: Entry | None
    ) -> None:
        if entry is not None:
            await self.ledger_writer.write(entry)
        keys = [key for charge in charges for key in self._keys(charge.counter)]
        args: list[Any] = [request_id]
        for charge in charges:
            args += [charge.amount, _expire_at(charge.counter)]
        try:
            await self._run(self._settle, keys, args)
        except InfrastructureError:
            self.stale.update(charge.counter for charge in charges)
            self._remember(request_id, [charge.counter for charge in charges])
            raise

    async def _rebuild(self, counter: Counter, *, stale: bool = False) -> None:
        """Install ``counter`` from the ledger (or raise it to the ledger's sum).

        One rebuild at a time: requests that all found the counter missing
        wait for the first, then see it ready instead of summing the ledger.
        """
        async with self._rebuilding:
            if not stale and await self._ready(counter):
                return
            await self._install_from_ledger(counter)

    async def _install_from_ledger(self, counter: Counter) -> None:
        try:
            total = await ledger.spent(self.database, counter)
        except StorageError as exc:
            raise InfrastructureError("database", str(exc)) from exc
        installed = await self._run(
            self._install, [self._keys(counter)[0]], [total, _expire_at(counter)]
        )
        if installed:
            log.info("budget counter %s rebuilt from the ledger", counter.key)

    async def _catch_up(self) -> None:
        """Raise counters whose settlement missed Redis to the ledger's sum,
        and release the holds of requests that will never settle on Redis."""
        while self.stale:
            counter = self.stale.pop()
            try:
                await self._rebuild(counter, stale=True)
            except InfrastructureError:
                self.stale.add(counter)
                raise
        if self.unreleased:
            try:
                await self._release()
            except InfrastructureError as exc:
                log.info("budget holds not released yet: %s", exc)

    def _remember(self, request_id: str, counters: list[Counter]) -> None:
        if len(self.unreleased) >= MAX_UNRELEASED:
            forgotten = next(iter(self.unreleased))
            del self.unreleased[forgotten]
            log.warning(
                "too many budget holds wait for Redis; those of request %s "
                "expire after hold_seconds instead",
                forgotten,
            )
        self.unreleased[request_id] = counters

    async def _release(self) -> None:
        """Settle remembered requests at nothing: their holds go, spend stays;
        on failure they wait for the next try.

        The batch leaves ``unreleased`` before the call, so admissions racing
        here after an outage do not each send the same releases.
        """
        taken = list(itertools.islice(self.unreleased, RELEASES_PER_CALL))
        batch = {request_id: self.unreleased.pop(request_id) for request_id in taken}

        async def call(client: aioredis.Redis) -> Any:
            pipeline = client.pipeline(transaction=False)
            for request_id, counters in batch.items():
                keys = [key for counter in counters for key in self._keys(counter)]
                args: list[Any] = [request_id]
                for counter in counters:
                    args += [0, _expire_at(counter)]
                await self._settle(keys=keys, args=args, client=pipeline)
            return await pipeline.execute()

        try:
            async with self._calls:
                await self.guard.call(call)
        except BaseException:  # a failure, or the admission's deadline
            for request_id, counters in batch.items():
                self.unreleased.setdefault(request_id, counters)
            raise
        log.info("released the budget holds of %d requests", len(batch))

    # TODO(redis-cluster): keys are not hash-tagged; a request's counters may
    # live on different cluster slots and the script would be refused.
    # TODO(redis-data-loss): when Redis loses its data, the holds of requests
    # in flight are lost with it; until those settle, admissions can pass the
    # budget by what they were holding.
    def _keys(self, counter: Counter) -> list[str]:
        counter_key = self.guard.key("budget", counter.key)
        return [counter_key, f"{counter_key}:holds"]

    async def _ready(self, counter: Counter) -> bool:
        key = self._keys(counter)[0]

        def call(client: aioredis.Redis) -> Awaitable[Any]:
            return client.hget(key, "ready")

        async with self._calls:
            return bool(await self.guard.call(call) == b"1")

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        def call(client: aioredis.Redis) -> Awaitable[Any]:
            return script(keys=keys, args=args, client=client)

        async with self._calls:
            return await self.guard.call(call)


def _maybe_ran(exc: InfrastructureError) -> bool:
    """Whether a failed call may still have run in Redis: it was sent and its
    answer did not come in time (a call the guard skipped was never sent)."""
    return isinstance(exc.__cause__, TimeoutError | RedisTimeoutError)


def _expire_at(counter: Counter) -> int:
    return int(counter.window.end.timestamp()) + KEEP_AFTER_WINDOW_SECONDS
