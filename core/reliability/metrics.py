"""The instruments of breakers and retries, on the app-owned registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from sluicegate.core.reliability.breaker import State

STATE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class ReliabilityMetrics:
    """Breaker states and transitions, retries and budget refusals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "sluicegate_breaker_state",
            "A target's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["target"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "sluicegate_breaker_transitions",
            "Changes of a target's circuit breaker state.",
            ["target", "from_state", "to_state"],
            registry=registry,
        )
        self.retries = Counter(
            "sluicegate_upstream_retries",
            "Attempts made again after a retryable provider failure.",
            ["target"],
            registry=registry,
        )
        self.retries_refused = Counter(
            "sluicegate_upstream_retries_refused",
            "Retries the per-process retry budget did not allow.",
            ["target"],
            registry=registry,
        )

    def transition(self, target: str, previous: State, state: State) -> None:
        self.breaker_state.labels(target=target).set(STATE_VALUES[state])
        self.breaker_transitions.labels(
            target=target, from_state=previous.value, to_state=state.value
        ).inc()
