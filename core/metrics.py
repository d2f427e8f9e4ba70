"""Prometheus metrics of one process, on an app-owned registry.

Labels are bounded: workspace, model, target, status, stage and error code
come from configuration or a closed set, never from raw request input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from sluicegate.core.evals.metrics import EvalMetrics
from sluicegate.core.observability.instruments import ObservabilityMetrics
from sluicegate.core.reliability.metrics import ReliabilityMetrics

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class Metrics:
    """The gateway's instruments."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "sluicegate_requests",
            "Proxied requests by how they ended.",
            ["workspace", "model", "target", "status", "fate"],
            registry=self.registry,
        )
        self.overhead = Histogram(
            "sluicegate_overhead_seconds",
            "Time the gateway itself spent on a request (upstream excluded).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fail_open_admissions = Counter(
            "sluicegate_fail_open_admissions",
            "Requests admitted because a "
            "stage's backing service failed and the stage fails open.",
            ["stage"],
            registry=self.registry,
        )
        self.reliability = ReliabilityMetrics(self.registry)
        self.observability = ObservabilityMetrics(self.registry)
        self.evals = EvalMetrics(self.registry)

    def observe(self, ctx: RequestContext) -> None:
        """Count a finished request and the gateway's own time on it."""
        outcome = ctx.outcome
        if outcome is None:
            return
        target = ctx.response.target if ctx.response is not None else ""
        self.requests.labels(
            workspace=ctx.principal.workspace,
            model=ctx.model,
            target=target,
            status=str(outcome.status),
            fate=outcome.fate.value,
        ).inc()
        self.overhead.observe(self.observability.overhead_seconds(ctx))
        self.observability.observe(ctx)

    def fail_open(self, stage: str) -> None:
        self.fail_open_admissions.labels(stage=stage).inc()

    def infrastructure_error(self, stage: str, service: str) -> None:
        self.observability.infrastructure_errors.labels(stage, service).inc()
