"""The observability instruments, on the app-owned registry.

Labels are bounded: routes and endpoints are the app's own names, error codes
are mapped onto a closed set (:data:`ERROR_CODES`, anything else is
``other``), workspaces, models, targets and stages come from configuration.
No label ever carries a request id or raw request input.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluicegate.core import errors

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RISK_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FIRST_CHUNK_AT = "observability.first_chunk_at"
"""``ctx.scratch`` key: ``perf_counter()`` when a stream's first chunk left."""
OVERHEAD_SECONDS = "observability.overhead_seconds"
"""``ctx.scratch`` key: the gateway's own time when the response started."""


def _codes_of(cls: type[errors.GatewayError]) -> set[str]:
    found = {cls.code}
    for sub in cls.__subclasses__():
        found |= _codes_of(sub)
    return found


ERROR_CODES = frozenset(
    _codes_of(errors.GatewayError)
    | {
        "cancelled",
        "internal_error",
        "not_found",
        "method_not_allowed",
        "bad_request",
        "unsupported_media_type",
        "invalid_admin_token",
        "forbidden",
    }
)


def error_code(code: str | None) -> str:
    """``code`` if it is in the closed set, ``""`` for none, else ``other``."""
    if not code:
        return ""
    return code if code in ERROR_CODES else "other"


class ObservabilityMetrics:
    """HTTP responses, latencies, tokens, denials, degradation and queues."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._responses(registry)
        self._latencies(registry)
        self._degradation(registry)
        self.tokens = Counter(
            "sluicegate_tokens",
            "Tokens of finished requests, by kind (prompt, completion, cached).",
            ["workspace", "model", "target", "kind"],
            registry=registry,
        )
        self.risk_scores = Histogram(
            "sluicegate_evaluation_risk_score",
            "Risk scores (0..1) evaluators gave, by evaluator.",
            ["evaluator"],
            buckets=RISK_BUCKETS,
            registry=registry,
        )

    def _responses(self, registry: CollectorRegistry) -> None:
        self.http_responses = Counter(
            "sluicegate_http_responses",
            "Every HTTP response by route, status and error code (before or "
            "after the pipeline; a stream counts when its headers are sent).",
            ["route", "status", "code"],
            registry=registry,
        )
        self.denials = Counter(
            "sluicegate_denials",
            "Requests a stage denied (rate limits, budgets, authorization).",
            ["workspace", "stage", "code"],
            registry=registry,
        )

    def _latencies(self, registry: CollectorRegistry) -> None:
        self.request_seconds = Histogram(
            "sluicegate_request_seconds",
            "Whole proxied requests, from arrival to the last byte.",
            ["endpoint", "fate"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "sluicegate_upstream_seconds",
            "Time spent waiting on providers per request (attempts and waits).",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token_seconds = Histogram(
            "sluicegate_time_to_first_token_seconds",
            "From a streamed request's arrival to its first chunk relayed.",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _degradation(self, registry: CollectorRegistry) -> None:
        self.infrastructure_errors = Counter(
            "sluicegate_infrastructure_errors",
            "A stage's backing service (redis, database) failed.",
            ["stage", "service"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "sluicegate_queue_depth",
            "Jobs waiting in a queue (e.g. evaluations).",
            ["queue"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.audit_spool_bytes = Gauge(
            "sluicegate_audit_spool_bytes",
            "Bytes of audit records waiting on local disk for the database.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.finishing = Gauge(
            "sluicegate_requests_finishing",
            "Requests answered whose after steps (audit record, settlements, "
            "evaluation jobs) are still running.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.draining = Gauge(
            "sluicegate_draining",
            "1 while the process drains in-flight requests before it stops.",
            multiprocess_mode="livemax",
            registry=registry,
        )

    def observe(self, ctx: RequestContext) -> None:
        """Latencies, tokens and denials of a finished proxied request."""
        outcome = ctx.outcome
        if outcome is None:
            return
        target = ctx.response.target if ctx.response is not None else ""
        elapsed = time.perf_counter() - ctx.started
        self.request_seconds.labels(ctx.endpoint, outcome.fate.value).observe(elapsed)
        if target:
            self.upstream_seconds.labels(target).observe(ctx.upstream_seconds)
        first_chunk = ctx.scratch.get(FIRST_CHUNK_AT)
        if target and isinstance(first_chunk, float):
            self.first_token_seconds.labels(target).observe(first_chunk - ctx.started)
        if outcome.denied_by:
            code = error_code(outcome.error_code)
            self.denials.labels(ctx.principal.workspace, outcome.denied_by, code).inc()
        self._tokens(ctx, target)

    def _tokens(self, ctx: RequestContext, target: str) -> None:
        usage = ctx.response.usage if ctx.response is not None else None
        if usage is None:
            return
        workspace, model = ctx.principal.workspace, ctx.model
        for kind, count in (
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("cached", usage.cached_tokens),
        ):
            if count:
                self.tokens.labels(workspace, model, target, kind).inc(count)

    def response(self, route: str, status: int, code: str | None) -> None:
        self.http_responses.labels(route, str(status), error_code(code)).inc()

    def overhead_seconds(self, ctx: RequestContext) -> float:
        """The gateway's own time: as sent in the header, else as of now."""
        sent = ctx.scratch.get(OVERHEAD_SECONDS)
        return sent if isinstance(sent, float) else ctx.overhead_ms() / 1000.0
