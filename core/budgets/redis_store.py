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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from redis.commands.core import AsyncScript

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
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

    def __init__(self, guard: RedisGuard, database: Database) -> None:
        self.guard = guard
        self.database = database
        self.stale: set[Counter] = set()
        """Counters whose settlement could not reach Redis."""
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
            status, index, spent, reserved, expired = await self._run(
                self._reserve, keys, args
            )
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
            await _write_ledger(self.database, entry)
        keys = [key for charge in charges for key in self._keys(charge.counter)]
        args: list[Any] = [request_id]
        for charge in charges:
            args += [charge.amount, _expire_at(charge.counter)]
        try:
            await self._run(self._settle, keys, args)
        except InfrastructureError:
            self.stale.update(charge.counter for charge in charges)
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
        """Raise counters whose settlement missed Redis to the ledger's sum."""
        while self.stale:
            counter = self.stale.pop()
            try:
                await self._rebuild(counter, stale=True)
            except InfrastructureError:
                self.stale.add(counter)
                raise

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


# TODO(ledger-spool): a row that cannot be written while the database is down
# is lost from the ledger (the Redis counter still counts it until the window
# ends); spool it to disk like the audit writer does.
async def _write_ledger(database: Database, entry: Entry) -> None:
    """Write the ledger row; a database outage is logged, not raised, so the
    counters still learn the spend."""
    try:
        await ledger.record(database, entry)
    except StorageError:
        log.exception(
            "the ledger row of request %s could not be written", entry.request_id
        )


def _expire_at(counter: Counter) -> int:
    return int(counter.window.end.timestamp()) + KEEP_AFTER_WINDOW_SECONDS
