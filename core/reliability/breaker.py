"""Circuit breakers, one per target (provider + upstream model).

A breaker is **closed** while its target is healthy: every call goes through
and its result lands in a sliding time window of one-second buckets.  Once
the window holds at least ``minimum_calls`` calls and the share of failures
(or of slow calls, by time to first byte) reaches its threshold, the breaker
**opens**: the route stage skips the target without touching it.  After
``cooldown_seconds`` the next caller finds it **half-open**: at most
``half_open_probes`` calls may be in flight at once; as many successes close
it again, and one failure or slow call opens it for another cool-down.

State is per process: each gateway process learns on its own, from its own
traffic, that a target is down (no Redis round trip on the hot path; a new
process starts with every breaker closed).  All pipelines of a process share
one :class:`Breakers`, kept on ``Services``.  The clock is injectable.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    """What one call through a breaker says about its target."""

    SUCCESS = "success"
    SLOW = "slow"
    FAILURE = "failure"
    NONE = "none"
    """No verdict (the client hung up, the gateway gave up): only frees a probe."""


@dataclass(frozen=True)
class Policy:
    """When breakers open and how they recover."""

    window_seconds: int = 30
    minimum_calls: int = 10
    failure_rate: float = 0.5
    slow_call_seconds: float = 30.0
    """Time to first byte above which a successful call counts as slow."""
    slow_call_rate: float = 1.0
    cooldown_seconds: float = 15.0
    half_open_probes: int = 1


@dataclass(frozen=True)
class Permit:
    """Leave to call a target once; hand it back with :meth:`Breaker.record`."""

    probe: bool
    generation: int


Transition = Callable[[str, State, State], None]
"""Called with (target, from, to) on every change of state."""


class Breaker:
    """The breaker of one target; see the module docstring."""

    def __init__(
        self,
        target: str,
        policy: Policy,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self.target = target
        self.policy = policy
        self.state = State.CLOSED
        self._clock = clock
        self._on_transition = on_transition
        self._buckets: deque[list[int]] = deque()
        """[second, calls, failures, slow calls], oldest first."""
        self._opened_at = 0.0
        self._generation = 0
        self._probes_in_flight = 0
        self._probe_successes = 0

    def acquire(self) -> Permit | None:
        """A permit to call the target now, or None if the breaker refuses."""
        if self.state is State.OPEN:
            if self._clock() - self._opened_at < self.policy.cooldown_seconds:
                return None
            self._move(State.HALF_OPEN)
        if self.state is State.HALF_OPEN:
            if self._probes_in_flight >= self.policy.half_open_probes:
                return None
            self._probes_in_flight += 1
            return Permit(probe=True, generation=self._generation)
        return Permit(probe=False, generation=self._generation)

    def record(self, permit: Permit, verdict: Verdict) -> None:
        """Hand back ``permit`` with what the call showed; exactly once each."""
        if permit.generation != self._generation:
            return  # from before the last change of state: stale
        if permit.probe:
            self._probe_ended(verdict)
        elif verdict is not Verdict.NONE:
            self._count(verdict)
            if self._tripped():
                self._move(State.OPEN)

    def counts(self) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the current window."""
        self._evict()
        calls = sum(bucket[1] for bucket in self._buckets)
        failures = sum(bucket[2] for bucket in self._buckets)
        slow = sum(bucket[3] for bucket in self._buckets)
        return calls, failures, slow

    def snapshot(self) -> dict[str, Any]:
        """The breaker's state as ``/readyz`` shows it."""
        calls, failures, slow = self.counts()
        view: dict[str, Any] = {
            "state": self.state.value,
            "calls": calls,
            "failures": failures,
            "slow_calls": slow,
        }
        if self.state is State.OPEN:
            left = self.policy.cooldown_seconds - (self._clock() - self._opened_at)
            view["retry_in_seconds"] = round(max(0.0, left), 3)
        return view

    def _probe_ended(self, verdict: Verdict) -> None:
        self._probes_in_flight -= 1
        if verdict in (Verdict.FAILURE, Verdict.SLOW):
            self._move(State.OPEN)
        elif verdict is Verdict.SUCCESS:
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._move(State.CLOSED)

    def _count(self, verdict: Verdict) -> None:
        second = int(self._clock())
        self._evict()
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += verdict is Verdict.FAILURE
        bucket[3] += verdict is Verdict.SLOW

    def _evict(self) -> None:
        oldest = int(self._clock()) - self.policy.window_seconds
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()

    def _tripped(self) -> bool:
        calls, failures, slow = self.counts()
        if calls < self.policy.minimum_calls:
            return False
        return (
            failures / calls >= self.policy.failure_rate
            or slow / calls >= self.policy.slow_call_rate
        )

    def _move(self, state: State) -> None:
        previous, self.state = self.state, state
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if state is State.OPEN:
            self._opened_at = self._clock()
        if state is State.CLOSED:
            self._buckets.clear()
        log.warning("breaker of %s: %s -> %s", self.target, previous, state)
        if self._on_transition is not None:
            self._on_transition(self.target, previous, state)


class Breakers:
    """Every target's breaker in one process, created on first use."""

    def __init__(
        self,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, Breaker] = {}

    def of(self, target: str) -> Breaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = Breaker(target, self.policy, self._clock, self._on_transition)
            self._breakers[target] = breaker
        return breaker

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every breaker met so far, by target."""
        return {
            target: breaker.snapshot()
            for target, breaker in sorted(self._breakers.items())
        }


def breakers_health(breakers: Breakers) -> dict[str, Any]:
    """The ``/readyz`` check: degraded while any target's breaker is not closed."""
    targets = breakers.snapshot()
    tripped = any(view["state"] != State.CLOSED.value for view in targets.values())
    return {
        "status": "degraded" if tripped else "ok",
        "scope": "per process",
        "targets": targets,
    }
