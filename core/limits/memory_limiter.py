"""The in-process limiter, and the semantics every limiter shares.

Requests and tokens limits are **sliding logs**: each admitted request is an
entry ``(time, request id, weight)`` under its check's key, and a window of
length W at time ``now`` holds the entries with ``now - W < time <= now``.  A
request is admitted when, for every check, the weights in the window plus its
own weight stay within the limit; then it is recorded under every key at once.
A sliding log is exact in every window of length W ending at any moment, which
is how "600 per minute" reads; GCRA and sliding-window counters admit up to
about twice the limit across some windows.  Its cost, one entry per admitted
request, is bounded by the limit for requests and by the admitted requests for
tokens.

Concurrency limits are sets of in-flight request ids, each with a lease
expiry, so a slot of a process that died frees itself when its lease ends.

This limiter serves the embedded mode (no Redis) and the per-process fallback
of a fail-open stage while Redis is down.  It keeps time in whole
microseconds, as the Redis script does, from an injectable monotonic clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sluicegate.core.limits.spec import MICROS, Check, Standing, Verdict

SWEEP_EVERY = 1024
"""Admissions between sweeps that drop keys nobody has used for a window."""


@dataclass
class _Log:
    """One sliding window: entries oldest first and the sum of their weights."""

    window: int
    entries: deque[tuple[int, str, int]] = field(default_factory=deque)
    used: int = 0

    def expire(self, cutoff: int) -> None:
        while self.entries and self.entries[0][0] <= cutoff:
            self.used -= self.entries.popleft()[2]

    def wait_until_fits(self, need: int, window: int, now: int) -> int:
        """Microseconds until ``need`` weight has left the window."""
        freed = 0
        for at, _, weight in self.entries:
            freed += weight
            if freed >= need:
                return at + window - now
        return window

    def reweigh(self, request_id: str, weight: int, now: int) -> None:
        for index, (at, owner, old) in enumerate(self.entries):
            if owner == request_id:
                self.entries[index] = (at, owner, weight)
                self.used += weight - old
                return
        if weight > 0:
            self.entries.append((now, request_id, weight))
            self.used += weight


class MemoryLimiter:
    """Sliding-log and concurrency limits kept in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._logs: dict[str, _Log] = {}
        self._slots: dict[str, dict[str, int]] = {}
        self._admissions = 0

    def now(self) -> int:
        return round(self.clock() * MICROS)

    async def admit(self, request_id: str, checks: Sequence[Check]) -> Verdict:
        now = self.now()
        self._maybe_sweep(now)
        standings = [self._stand(check, now) for check in checks]
        if any(standing.denied for standing in standings):
            return Verdict(tuple(standings))
        for check in checks:
            self._record(request_id, check, now)
        return Verdict(tuple(_admitted(standing) for standing in standings))

    async def settle(
        self, request_id: str, checks: Sequence[Check], tokens: int | None
    ) -> None:
        now = self.now()
        for check in checks:
            if check.unit == "concurrent":
                self._slots.get(check.key, {}).pop(request_id, None)
            elif check.unit == "tokens" and tokens is not None:
                log = self._log(check)
                log.expire(now - check.window_us)
                log.reweigh(request_id, tokens, now)

    def in_flight(self, key: str) -> int:
        """Concurrency slots held under ``key`` (expired leases excluded)."""
        now = self.now()
        return sum(1 for until in self._slots.get(key, {}).values() if until > now)

    def _stand(self, check: Check, now: int) -> Standing:
        if check.unit == "concurrent":
            slots = self._slots.setdefault(check.key, {})
            for owner in [o for o, until in slots.items() if until <= now]:
                del slots[owner]
            denied = len(slots) + check.weight > check.limit
            return Standing(check, denied, max(0, check.limit - len(slots)), 0, 0)
        log = self._log(check)
        log.expire(now - check.window_us)
        reset = log.entries[-1][0] + check.window_us - now if log.entries else 0
        need = log.used + check.weight - check.limit
        if need <= 0:
            return Standing(check, False, check.limit - log.used, reset, 0)
        retry = (
            check.window_us
            if check.weight > check.limit
            else log.wait_until_fits(need, check.window_us, now)
        )
        return Standing(check, True, max(0, check.limit - log.used), reset, retry)

    def _log(self, check: Check) -> _Log:
        log = self._logs.get(check.key)
        if log is None:
            log = self._logs[check.key] = _Log(check.window_us)
        return log

    def _record(self, request_id: str, check: Check, now: int) -> None:
        if check.unit == "concurrent":
            self._slots[check.key][request_id] = now + check.window_us
            return
        log = self._logs[check.key]
        log.entries.append((now, request_id, check.weight))
        log.used += check.weight

    def _maybe_sweep(self, now: int) -> None:
        self._admissions += 1
        if self._admissions % SWEEP_EVERY:
            return
        for key in [k for k, log in self._logs.items() if _idle(log, now)]:
            del self._logs[key]
        for key in [k for k, slots in self._slots.items() if _vacant(slots, now)]:
            del self._slots[key]


def _admitted(standing: Standing) -> Standing:
    check = standing.check
    reset = check.window_us if check.unit != "concurrent" else 0
    remaining = standing.remaining - check.weight
    return Standing(check, False, remaining, reset, 0)


def _idle(log: _Log, now: int) -> bool:
    return not log.entries or log.entries[-1][0] <= now - log.window


def _vacant(slots: dict[str, int], now: int) -> bool:
    return all(until <= now for until in slots.values())
