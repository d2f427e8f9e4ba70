"""Property tests of the in-process limiter on a clock the test controls."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.core.limits.memory_limiter import MemoryLimiter
from sluicegate.core.limits.spec import MICROS, Check

T = TypeVar("T")

steps = st.lists(st.tuples(st.integers(0, 3_000_000), st.integers(1, 40)), max_size=80)
"""(microseconds to advance, weight) of successive admission attempts."""


class Clock:
    def __init__(self) -> None:
        self.micros = 1_000 * MICROS

    def __call__(self) -> float:
        return self.micros / MICROS


def now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must not wait for anything."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the in-process limiter awaited something")


def tokens(limit: int, window_us: int, weight: int) -> Check:
    return Check("k", "tokens", limit, window_us, weight, "workspace", "acme")


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 100), window_s=st.integers(1, 10), attempts=steps)
def test_no_window_ever_holds_more_than_the_limit(
    limit: int, window_s: int, attempts: list[tuple[int, int]]
) -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    window = window_s * MICROS
    admitted: list[tuple[int, int]] = []
    for index, (advance, weight) in enumerate(attempts):
        clock.micros += advance
        verdict = now(limiter.admit(f"r{index}", [tokens(limit, window, weight)]))
        inside = sum(w for at, w in admitted if at > clock.micros - window)
        assert verdict.admitted == (inside + weight <= limit)
        if verdict.admitted:
            admitted.append((clock.micros, weight))
            assert inside + weight <= limit


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 100), window_s=st.integers(1, 10), attempts=steps)
def test_a_denied_request_fits_once_its_retry_time_has_passed(
    limit: int, window_s: int, attempts: list[tuple[int, int]]
) -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    window = window_s * MICROS
    for index, (advance, weight) in enumerate(attempts):
        clock.micros += advance
        check = tokens(limit, window, weight)
        standing = now(limiter.admit(f"r{index}", [check])).standings[0]
        if standing.denied and weight <= limit:
            clock.micros += standing.retry_us
            assert now(limiter.admit(f"retry{index}", [check])).admitted


slot_steps = st.lists(
    st.tuples(
        st.sampled_from(["admit", "release", "crash"]),
        st.integers(0, 2_000_000),
        st.integers(0, 20),
    ),
    max_size=80,
)
"""(what happens, microseconds to advance first, which request it concerns)."""


def slots(limit: int, lease_us: int) -> Check:
    return Check("c", "concurrent", limit, lease_us, 1, "api_key", "k")


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 10), lease_s=st.integers(1, 5), events=slot_steps)
def test_concurrency_slots_never_exceed_the_limit_and_never_leak(
    limit: int, lease_s: int, events: list[tuple[str, int, int]]
) -> None:
    """Requests that end release their slot; requests whose process crashed
    (never released) hold theirs until the lease runs out. At every step the
    slots held are exactly the live ones, never more than the limit, and an
    admission is refused only when all of them are taken."""
    clock = Clock()
    limiter = MemoryLimiter(clock)
    check = slots(limit, lease_s * MICROS)
    live: dict[str, int] = {}
    for index, (event, advance, which) in enumerate(events):
        clock.micros += advance
        live = {r: until for r, until in live.items() if until > clock.micros}
        if event == "admit":
            admitted = now(limiter.admit(f"r{index}", [check])).admitted
            assert admitted == (len(live) < limit)
            if admitted:
                live[f"r{index}"] = clock.micros + check.window_us
        elif live:
            owner = sorted(live)[which % len(live)]
            if event == "release":
                now(limiter.settle(owner, [check], None))
                del live[owner]
        assert limiter.in_flight("c") == len(live) <= limit

    for owner in list(live):
        now(limiter.settle(owner, [check], None))
    assert limiter.in_flight("c") == 0
