"""The circuit breaker and the retry budget, on a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.core.reliability.breaker import (
    Breaker,
    Permit,
    Policy,
    State,
    Verdict,
)
from sluicegate.core.reliability.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy(
    window_seconds=10,
    minimum_calls=4,
    failure_rate=0.5,
    slow_call_seconds=1.0,
    slow_call_rate=0.75,
    cooldown_seconds=5.0,
    half_open_probes=2,
)


def breaker(
    clock: Clock, transitions: list[tuple[State, State]] | None = None
) -> Breaker:
    seen = transitions if transitions is not None else []
    return Breaker(
        "p/m", POLICY, clock, lambda _target, old, new: seen.append((old, new))
    )


def call(b: Breaker, verdict: Verdict) -> None:
    permit = b.acquire()
    assert permit is not None
    b.record(permit, verdict)


def test_failures_below_the_minimum_calls_never_open_it() -> None:
    b = breaker(Clock())
    for _ in range(3):
        call(b, Verdict.FAILURE)
    assert b.state is State.CLOSED


def test_it_opens_at_the_failure_rate_once_the_minimum_is_reached() -> None:
    transitions: list[tuple[State, State]] = []
    b = breaker(Clock(), transitions)
    for verdict in (Verdict.SUCCESS, Verdict.SUCCESS, Verdict.FAILURE):
        call(b, verdict)
    assert b.state is State.CLOSED
    call(b, Verdict.FAILURE)
    assert b.state is State.OPEN
    assert transitions == [(State.CLOSED, State.OPEN)]
    assert b.acquire() is None


def test_slow_calls_open_it_too() -> None:
    b = breaker(Clock())
    for _ in range(3):
        call(b, Verdict.SLOW)
    call(b, Verdict.SUCCESS)
    assert b.state is State.OPEN


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        call(b, Verdict.FAILURE)
    clock.now += 11
    call(b, Verdict.FAILURE)
    assert b.state is State.CLOSED
    assert b.counts() == (1, 1, 0)


def test_after_the_cooldown_probes_decide() -> None:
    clock = Clock()
    transitions: list[tuple[State, State]] = []
    b = breaker(clock, transitions)
    for _ in range(4):
        call(b, Verdict.FAILURE)
    clock.now += 5
    first, second = b.acquire(), b.acquire()
    assert b.state is State.HALF_OPEN
    assert first is not None and second is not None and b.acquire() is None
    b.record(first, Verdict.SUCCESS)
    b.record(second, Verdict.SUCCESS)
    assert b.state is State.CLOSED
    assert [new for _, new in transitions] == [
        State.OPEN,
        State.HALF_OPEN,
        State.CLOSED,
    ]


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        call(b, Verdict.FAILURE)
    clock.now += 5
    call(b, Verdict.FAILURE)
    assert b.state is State.OPEN
    clock.now += 4.9
    assert b.acquire() is None


def test_a_probe_without_verdict_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        call(b, Verdict.FAILURE)
    clock.now += 5
    permits = [b.acquire(), b.acquire()]
    assert b.acquire() is None
    assert permits[0] is not None
    b.record(permits[0], Verdict.NONE)
    assert b.acquire() is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acquire", "release", "tick"]),
            st.sampled_from(list(Verdict)),
            st.floats(min_value=0, max_value=6),
        ),
        max_size=80,
    )
)
def test_never_more_probes_in_flight_than_configured(
    steps: list[tuple[str, Verdict, float]],
) -> None:
    clock = Clock()
    b = breaker(clock)
    held: list[Permit] = []
    for action, verdict, seconds in steps:
        if action == "acquire" and (permit := b.acquire()) is not None:
            held.append(permit)
        elif action == "release" and held:
            b.record(held.pop(0), verdict)
        else:
            clock.now += seconds
        current = [p for p in held if p.probe and p.generation == b._generation]
        assert len(current) <= POLICY.half_open_probes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(Verdict)), max_size=40))
def test_it_never_opens_before_the_minimum_calls(verdicts: list[Verdict]) -> None:
    b = breaker(Clock())
    for count, verdict in enumerate(verdicts, start=1):
        call(b, verdict)
        if b.state is State.OPEN:
            counted = sum(v is not Verdict.NONE for v in verdicts[:count])
            assert counted >= POLICY.minimum_calls
            return


def test_the_retry_budget_allows_a_fraction_of_requests_plus_a_reserve() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, minimum_per_second=1.0, burst=100, clock=clock)
    allowed = 0
    for _ in range(100):
        budget.deposit()
        allowed += budget.withdraw()
    # 1 token of reserve at start, then 0.2 per request: 1 + 20 = 21.
    assert allowed == 21
    clock.now += 3
    assert [budget.withdraw() for _ in range(4)] == [True, True, True, False]
