"""The Redis limiter: one Lua script admits all limits of a request atomically.

The semantics are those of :mod:`sluicegate.core.limits.memory_limiter`
(sliding logs for requests and tokens, leased slots for concurrency), kept in
Redis so that every gateway process shares one exact count:

* one round trip per admission: ``EVALSHA`` of one script for every check;
* the time is Redis's own (``TIME`` inside the script), so the clocks of
  gateway machines do not matter;
* a window is a sorted set of ``<request id>:<weight>`` scored by admission
  time in microseconds, plus a key holding the sum of its weights (rebuilt from
  the set if it is ever lost); a concurrency limit is a sorted set of request
  ids scored by lease expiry;
* the caller puts one hash tag (the workspace) in every key of a request, so
  all of them live in one Redis Cluster slot.

Every call goes through :class:`~sluicegate.core.redis_guard.RedisGuard`
(short timeout, breaker); a failure raises InfrastructureError.

A concurrency slot Redis may keep for a request that will never settle there
(its settlement failed, or its admission timed out although Redis may still
run it, as a paused server does when it resumes) is remembered and released
at the next admission that reaches Redis, instead of at the end of its lease.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluicegate.core.errors import InfrastructureError
from sluicegate.core.limits.spec import Check, Standing, Verdict
from sluicegate.core.redis_guard import RedisGuard

log = logging.getLogger(__name__)

FIELDS_PER_CHECK = 4
MAX_UNRELEASED = 10_000
"""Requests whose slots are remembered for release at most; beyond, the oldest
is forgotten and its slots free themselves when their lease ends."""
RELEASES_PER_CALL = 500

_SHARED_LUA = """
local function weight_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function ttl_ms(span)
  return math.floor(span / 1000) + 1000
end
"""

ADMIT_LUA = (
    _SHARED_LUA
    + """
-- KEYS: per window check its log and its sum; per concurrency check its set.
-- ARGV: request id, then per check: kind ('w' or 'c'), limit, span in
-- microseconds (window or lease), weight.
-- Returns per check: denied (0/1), remaining, reset_us, retry_us.

local function window_used(log, sum, cutoff, span)
  local stored = redis.call('GET', sum)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if stored and #expired == 0 then
    return tonumber(stored)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  end
  local used = 0
  if stored then
    used = tonumber(stored)
    for _, member in ipairs(expired) do used = used - weight_of(member) end
  else
    for _, member in ipairs(redis.call('ZRANGE', log, 0, -1)) do
      used = used + weight_of(member)
    end
  end
  if used <= 0 then
    redis.call('DEL', sum)
    return 0
  end
  redis.call('SET', sum, used, 'PX', ttl_ms(span))
  return used
end

local function wait_until_fits(log, need, span, now)
  local freed = 0
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    freed = freed + weight_of(entries[i])
    if freed >= need then return tonumber(entries[i + 1]) + span - now end
  end
  return span
end

local function reset_of(log, span, now)
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #newest == 0 then return 0 end
  return tonumber(newest[2]) + span - now
end

local function stand_window(c, now)
  c.used = window_used(c.log, c.sum, now - c.span, c.span)
  c.reset = reset_of(c.log, c.span, now)
  local need = c.used + c.weight - c.limit
  if need <= 0 then return end
  c.denied = 1
  if c.weight > c.limit then
    c.retry = c.span
  else
    c.retry = wait_until_fits(c.log, need, c.span, now)
  end
end

local function stand_slots(c, now)
  redis.call('ZREMRANGEBYSCORE', c.log, '-inf', now)
  c.used = redis.call('ZCARD', c.log)
  if c.used + c.weight > c.limit then c.denied = 1 end
end

local function record(c, id, now)
  if c.kind == 'c' then
    redis.call('ZADD', c.log, now + c.span, id)
    redis.call('PEXPIRE', c.log, ttl_ms(c.span))
    return
  end
  redis.call('ZADD', c.log, now, id .. ':' .. c.weight)
  redis.call('INCRBY', c.sum, c.weight)
  redis.call('PEXPIRE', c.log, ttl_ms(c.span))
  redis.call('PEXPIRE', c.sum, ttl_ms(c.span))
  c.reset = c.span
end

local now = now_us()
local id = ARGV[1]
local checks = {}
local denied = false
local k = 1
for a = 2, #ARGV, 4 do
  local c = {kind = ARGV[a], limit = tonumber(ARGV[a + 1]),
             span = tonumber(ARGV[a + 2]), weight = tonumber(ARGV[a + 3]),
             denied = 0, reset = 0, retry = 0, log = KEYS[k]}
  if c.kind == 'w' then
    c.sum = KEYS[k + 1]
    k = k + 2
    stand_window(c, now)
  else
    k = k + 1
    stand_slots(c, now)
  end
  if c.denied == 1 then denied = true end
  checks[#checks + 1] = c
end

local out = {}
for _, c in ipairs(checks) do
  local remaining = c.limit - c.used
  if not denied then
    record(c, id, now)
    remaining = remaining - c.weight
  end
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = c.denied
  out[#out + 1] = remaining
  out[#out + 1] = c.reset
  out[#out + 1] = c.retry
end
return out
"""
)

SETTLE_LUA = (
    _SHARED_LUA
    + """
-- KEYS: as for admission.  ARGV: request id, then per check: kind, span,
-- recorded weight, settled weight.  Releases slots; re-weighs window entries.
local id = ARGV[1]
local k = 1
local now = nil
for a = 2, #ARGV, 4 do
  local kind, span = ARGV[a], tonumber(ARGV[a + 1])
  local old, new = ARGV[a + 2], tonumber(ARGV[a + 3])
  if kind == 'c' then
    redis.call('ZREM', KEYS[k], id)
    k = k + 1
  else
    local log, sum = KEYS[k], KEYS[k + 1]
    k = k + 2
    local score = redis.call('ZSCORE', log, id .. ':' .. old)
    if score then
      redis.call('ZREM', log, id .. ':' .. old)
      redis.call('ZADD', log, score, id .. ':' .. new)
    elseif new > 0 then
      now = now or now_us()
      redis.call('ZADD', log, now, id .. ':' .. new)
      redis.call('PEXPIRE', log, ttl_ms(span))
      old = 0
    end
    if (score or new > 0) and redis.call('EXISTS', sum) == 1 then
      redis.call('INCRBY', sum, new - tonumber(old))
    end
  end
end
return 1
"""
)


class RedisLimiter:
    """Sliding-log and concurrency limits shared through Redis."""

    def __init__(self, guard: RedisGuard) -> None:
        self.guard = guard
        self._admit = guard.client.register_script(ADMIT_LUA)
        self._settle = guard.client.register_script(SETTLE_LUA)
        self.unreleased: dict[str, list[str]] = {}
        """Requests whose concurrency slots Redis may keep although they will
        never settle there, with the keys of those slots."""

    async def admit(self, request_id: str, checks: Sequence[Check]) -> Verdict:
        keys, args = _arguments(request_id, checks, _admission_fields)
        try:
            raw: list[Any] = await self.guard.call(
                lambda client: self._admit(keys=keys, args=args, client=client)
            )
        except InfrastructureError as exc:
            if isinstance(exc.__cause__, TimeoutError | RedisTimeoutError):
                self._remember(request_id, checks)
            raise
        if self.unreleased:
            await self._release()
        return _verdict(checks, raw)

    async def settle(
        self, request_id: str, checks: Sequence[Check], tokens: int | None
    ) -> None:
        chosen = [c for c in checks if c.unit == "concurrent" or _reweighs(c, tokens)]
        if not chosen:
            return
        keys, args = _arguments(
            request_id, chosen, lambda check: _settle_fields(check, tokens)
        )
        try:
            await self.guard.call(
                lambda client: self._settle(keys=keys, args=args, client=client)
            )
        except InfrastructureError:
            self._remember(request_id, checks)
            raise

    def _remember(self, request_id: str, checks: Sequence[Check]) -> None:
        slots = [check.key for check in checks if check.unit == "concurrent"]
        if not slots:
            return
        if len(self.unreleased) >= MAX_UNRELEASED:
            forgotten = next(iter(self.unreleased))
            del self.unreleased[forgotten]
            log.warning(
                "too many concurrency slots wait for Redis; those of request %s "
                "free themselves when their lease ends",
                forgotten,
            )
        self.unreleased[request_id] = slots

    async def _release(self) -> None:
        """Remove remembered slots; on failure they wait for the next try."""
        batch = dict(itertools.islice(self.unreleased.items(), RELEASES_PER_CALL))

        def call(client: aioredis.Redis) -> Any:
            pipeline = client.pipeline(transaction=False)
            for request_id, slots in batch.items():
                for key in slots:
                    pipeline.zrem(key, request_id)
            return pipeline.execute()

        try:
            await self.guard.call(call)
        except InfrastructureError as exc:
            log.info("concurrency slots not released yet: %s", exc)
            return
        for request_id in batch:
            self.unreleased.pop(request_id, None)
        log.info("released the concurrency slots of %d requests", len(batch))


def _arguments(
    request_id: str, checks: Sequence[Check], fields: Any
) -> tuple[list[str], list[str | int]]:
    keys: list[str] = []
    args: list[str | int] = [request_id]
    for check in checks:
        if check.unit == "concurrent":
            keys.append(check.key)
        else:
            keys.extend((f"{check.key}:log", f"{check.key}:sum"))
        args.extend(fields(check))
    return keys, args


def _admission_fields(check: Check) -> tuple[str, int, int, int]:
    kind = "c" if check.unit == "concurrent" else "w"
    return kind, check.limit, check.window_us, check.weight


def _settle_fields(check: Check, tokens: int | None) -> tuple[str, int, int, int]:
    kind = "c" if check.unit == "concurrent" else "w"
    settled = tokens if tokens is not None else check.weight
    return kind, check.window_us, check.weight, settled


def _reweighs(check: Check, tokens: int | None) -> bool:
    return check.unit == "tokens" and tokens is not None and tokens != check.weight


def _verdict(checks: Sequence[Check], raw: list[Any]) -> Verdict:
    standings = []
    for index, check in enumerate(checks):
        denied, remaining, reset, retry = (
            int(value) for value in raw[index * 4 : index * 4 + FIELDS_PER_CHECK]
        )
        standings.append(Standing(check, bool(denied), remaining, reset, retry))
    return Verdict(tuple(standings))
