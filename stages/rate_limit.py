"""The ``rate_limit`` stage: requests, tokens and concurrency limits.

Limits are declared per workspace pipeline (scopes: workspace, API key, client
IP, model) and enforced by one atomic admission for all of them: in Redis when
``SLUICEGATE_REDIS_URL`` is set (exact across processes), else in process.
Tokens are charged an estimate at admission and settled to the provider's
reported usage by the after step, which also releases concurrency slots
whatever happened to the request.

When Redis fails, ``on_failure: open`` (the default, DESIGN §5) falls back to
a per-process limiter allowing the configured limit divided by
``SLUICEGATE_GATEWAY_PROCESSES``, never to no limit; ``on_failure: closed``
lets the failure reach the runner, which answers 503.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from sluicegate.core.errors import InfrastructureError, RateLimitExceeded
from sluicegate.core.limits.estimate import estimate_tokens
from sluicegate.core.limits.headers import rate_limit_headers, retry_after_seconds
from sluicegate.core.limits.spec import (
    MICROS,
    Check,
    Limiter,
    LimitRule,
    Standing,
    Verdict,
)
from sluicegate.core.limits.state import LimitsState, limits_state
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)


class RateLimitConfig(StageConfig):
    on_failure: Literal["open", "closed"] = Field(
        default="open",
        description="When Redis fails: open falls back to per-process limits "
        "(limit / SLUICEGATE_GATEWAY_PROCESSES), closed answers 503.",
    )
    limits: list[LimitRule] = Field(min_length=1)
    completion_tokens_estimate: int = Field(
        default=1024,
        gt=0,
        description="Completion tokens charged at admission when a request "
        "sets no max_tokens; corrected by real usage afterwards.",
    )
    concurrent_lease_seconds: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="A concurrency slot frees itself after this long even if "
        "its process died; keep it above the longest request.",
    )

    @field_validator("limits")
    @classmethod
    def _distinct(cls, rules: list[LimitRule]) -> list[LimitRule]:
        seen: set[tuple[str, str, int]] = set()
        for rule in rules:
            identity = (rule.scope, rule.unit, rule.window)
            if identity in seen:
                raise ValueError(
                    f"two {rule.unit} limits on scope {rule.scope} with the same "
                    "window; keep one"
                )
            seen.add(identity)
        return rules


@dataclass(frozen=True, slots=True)
class _Rule:
    """A declared limit with what every request's check needs worked out once."""

    rule: LimitRule
    span_us: int
    suffix: str


@dataclass(frozen=True, slots=True)
class _Held:
    """What the after step settles: the limiter that admitted and its checks."""

    limiter: Limiter
    checks: list[Check]


class RateLimitStage(Stage):
    """Admits a request only if every declared limit has room for it."""

    type_name = "rate_limit"
    Config = RateLimitConfig

    def __init__(self, config: RateLimitConfig, services: Services) -> None:
        super().__init__(config, services)
        self.state: LimitsState = limits_state(services)
        # TODO(rate-limit-lease): leases are not renewed, so a request running
        # longer than concurrent_lease_seconds frees its slot early.
        lease_us = int(config.concurrent_lease_seconds * MICROS)
        self.rules = [
            _Rule(rule, rule.window * MICROS or lease_us, f"{rule.unit}/{rule.window}s")
            for rule in config.limits
        ]
        self.prefix = services.settings.redis_prefix
        self.counts_tokens = any(rule.unit == "tokens" for rule in config.limits)

    async def before(self, ctx: RequestContext) -> Deny | None:
        # TODO(one-admission): this script and the budget stage's reservation
        # are two Redis round trips; one admission step across stages would
        # make them one.
        checks = self._checks(ctx)
        verdict, limiter, checks = await self._admit(ctx, checks)
        ctx.response_headers.update(rate_limit_headers(verdict))
        if not verdict.admitted:
            return _deny(verdict)
        ctx.scratch[self.id] = _Held(limiter, checks)
        return None

    async def after(self, ctx: RequestContext) -> None:
        held = ctx.scratch.pop(self.id, None)
        if not isinstance(held, _Held):
            return
        try:
            await held.limiter.settle(ctx.request_id, held.checks, _settled_tokens(ctx))
        except InfrastructureError as exc:
            log.warning(
                "stage %s could not settle request %s (%s); its concurrency slots "
                "free themselves when their lease ends",
                self.id,
                ctx.request_id,
                exc,
            )

    async def _admit(
        self, ctx: RequestContext, checks: list[Check]
    ) -> tuple[Verdict, Limiter, list[Check]]:
        state = self.state
        if state.redis is None:
            return await state.local.admit(ctx.request_id, checks), state.local, checks
        try:
            verdict = await state.redis.admit(ctx.request_id, checks)
        except InfrastructureError as exc:
            # TODO(rate-limit-timeout): a timed-out script may still have run
            # in Redis; falling back then counts the request in both limiters,
            # and a loop stalled past the Redis timeout over-admits by design.
            if not self.fails_open:
                state.failed(self.id, "closed")
                raise
            return await self._fall_back(ctx, checks, exc)
        state.recovered()
        return verdict, state.redis, checks

    async def _fall_back(
        self, ctx: RequestContext, checks: list[Check], exc: InfrastructureError
    ) -> tuple[Verdict, Limiter, list[Check]]:
        state = self.state
        state.failed(self.id, "open")
        ctx.decide(self.id, "fail_open", exc.service)
        local = state.fallback_checks(checks)
        verdict = await state.local.admit(ctx.request_id, local)
        if verdict.admitted:
            state.fail_open_admissions += 1
            self.services.metrics.fail_open(self.id)
            log.info(
                "stage %s admits %s on per-process limits: %s",
                self.id,
                ctx.request_id,
                exc,
            )
        return verdict, state.local, local

    def _checks(self, ctx: RequestContext) -> list[Check]:
        tokens = (
            estimate_tokens(
                ctx.endpoint, ctx.body, self.config.completion_tokens_estimate
            )
            if self.counts_tokens
            else 0
        )
        return [self._check(rule, ctx, tokens) for rule in self.rules]

    def _check(self, declared: _Rule, ctx: RequestContext, tokens: int) -> Check:
        rule = declared.rule
        subject = _subject(rule, ctx)
        tag = f"{{ws:{ctx.principal.workspace_id}}}"
        key = (
            f"{self.prefix}:{tag}:rl:{self.id}:{rule.scope}={subject}:{declared.suffix}"
        )
        weight = tokens if rule.unit == "tokens" else 1
        return Check(
            key, rule.unit, rule.limit, declared.span_us, weight, rule.scope, subject
        )


def _subject(rule: LimitRule, ctx: RequestContext) -> str:
    principal = ctx.principal
    if rule.scope == "workspace":
        return principal.workspace
    if rule.scope == "api_key":
        key = principal.key_id if principal.key_id is not None else principal.key_prefix
        return str(key if key is not None else principal.subject or "anonymous")
    return ctx.client_ip if rule.scope == "ip" else ctx.model


def _settled_tokens(ctx: RequestContext) -> int | None:
    """Real tokens if reported; 0 if no provider answered; None keeps the estimate."""
    if ctx.response is None:
        return 0
    usage = ctx.response.usage
    return usage.total_tokens if usage is not None else None


def _deny(verdict: Verdict) -> Deny:
    denials = verdict.denials
    retry = retry_after_seconds(denials)
    error = RateLimitExceeded(
        f"{_explain(denials[0])}; retry after {retry}s",
        headers={"retry-after": str(retry), "retry-after-ms": str(retry * 1000)},
    )
    return Deny.of(error)


def _explain(standing: Standing) -> str:
    check = standing.check
    who = f"{check.scope.replace('_', ' ')} {check.subject!r}"
    if check.unit == "concurrent":
        return f"{who} already has {check.limit} requests in flight, its limit"
    per = f"{check.window_us // MICROS}s"
    if check.unit == "requests":
        return f"{who} has used its {check.limit} requests per {per}"
    if check.weight > check.limit:
        return (
            f"this request is estimated at {check.weight} tokens, more than the "
            f"limit of {check.limit} tokens per {per} for {who}; lower max_tokens"
        )
    return (
        f"this request is estimated at {check.weight} tokens and {who} has "
        f"{standing.remaining} of its {check.limit} tokens per {per} left"
    )
