"""The ``route`` stage: send the request to a target and hand back its answer.

A public model's targets are tried in order (fallback) or by weight.  Each
target gets ``retries`` more attempts after a retryable failure (the statuses
of ``retry_statuses``, timeouts, refused or reset connections; never a status
that blames the request), with exponential backoff and full jitter, or the
wait a ``Retry-After`` asks for up to ``retry_after_cap_seconds``.  A longer
wait moves on to the next target; on the last one the provider's 429 reaches
the client with its ``Retry-After``.  ``deadline_seconds`` bounds the whole
request, attempts and waits; when it passes the answer is 504.

Every attempt asks the target's circuit breaker first (an open breaker skips
the target without touching it) and reports back what it showed.  Retries
are paid from the process's retry budget.  A stream's first chunk is read
here, before the client gets anything: a failure up to that point may still
be retried, none after it.

The answer carries ``x-sluicegate-target`` (set by the HTTP layer),
``x-sluicegate-attempts`` (upstream attempts made) and, when there were
retries, ``x-sluicegate-retry-waits`` (the seconds waited before each).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from sluicegate.core.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    RateLimitExceeded,
    SluicegateError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sluicegate.core.gateway_config import ModelRoute, Target
from sluicegate.core.reliability.breaker import Breaker, Permit, Verdict
from sluicegate.core.reliability.first_byte import prime
from sluicegate.core.stage import Deny, Stage, StageConfig
from sluicegate.stages.route_dispatch import dispatch

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext, UpstreamResponse
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

CLIENT_ERRORS = frozenset({400, 404, 413, 422})
"""Upstream statuses that blame the request itself: passed to the client."""

NEVER_RETRIED = frozenset({400, 401, 403, 404, 413, 422})
"""Statuses no retry can cure; refused in ``retry_statuses``."""


class RouteConfig(StageConfig):
    retries: int = Field(default=2, ge=0, le=10, description="Per target.")
    deadline_seconds: float = Field(default=600.0, gt=0, le=3600)
    backoff_base_seconds: float = Field(default=0.25, ge=0)
    backoff_max_seconds: float = Field(default=8.0, ge=0)
    retry_statuses: frozenset[int] = Field(
        default=frozenset({429, 500, 502, 503, 504, 529}),
        description="Upstream statuses worth another attempt (529: Anthropic "
        "is overloaded).",
    )
    retry_on_timeout: bool = True
    retry_on_connection_error: bool = True
    retry_after_cap_seconds: float = Field(
        default=10.0,
        ge=0,
        description="The longest Retry-After honoured; past it, the next target.",
    )
    seed: int | None = Field(
        default=None,
        description="Seed of the jitter and weighted choice, for reproducible "
        "waits; unset in production.",
    )

    @field_validator("retry_statuses")
    @classmethod
    def _curable(cls, value: frozenset[int]) -> frozenset[int]:
        refused = sorted(value & NEVER_RETRIED)
        if refused:
            raise ValueError(
                f"{refused} blame the request (or the provider key) and are "
                "never retried; list 429 and 5xx statuses only"
            )
        return value


class Skip(SluicegateError):
    """This target is done with; try the next one.  Never leaves the stage."""


@dataclass
class Trip:
    """One request's way through its route's targets."""

    deadline: float
    attempts: int = 0
    waits: list[float] = field(default_factory=list)
    last: ProviderError | None = None
    deadline_passed: bool = False

    def headers(self) -> dict[str, str]:
        headers = {"x-sluicegate-attempts": str(self.attempts)}
        if self.waits:
            waits = ",".join(f"{wait:.3f}" for wait in self.waits)
            headers["x-sluicegate-retry-waits"] = waits
        return headers


class RouteStage(Stage):
    """Calls the providers of the requested model's route."""

    type_name = "route"
    Config = RouteConfig
    produces_response = True

    config: RouteConfig

    def __init__(self, config: RouteConfig, services: Services) -> None:
        super().__init__(config, services)
        self.random = random.Random(config.seed)

    async def before(self, ctx: RequestContext) -> Deny | None:
        route = self.services.config.models.get(ctx.model)
        if route is None:
            return Deny.of(ModelNotFound(f"no route for model {ctx.model!r}"))
        self.services.retry_budget.deposit()

        trip = Trip(deadline=time.monotonic() + self.config.deadline_seconds)
        try:
            ctx.response = await self._first_answer(ctx, route, trip)
        finally:
            ctx.response_headers.update(trip.headers())
        ctx.decide(self.id, "served", ctx.response.target)
        return None

    async def _first_answer(
        self, ctx: RequestContext, route: ModelRoute, trip: Trip
    ) -> UpstreamResponse:
        targets = self._order(route)
        for index, target in enumerate(targets):
            try:
                return await self._attempts(ctx, target, trip)
            except Skip as skip:
                log.warning("target %s skipped: %s", target.name, skip)
                ctx.decide(self.id, "skipped", f"{target.name}: {skip}")
                self._pass_rate_limit(trip, last=index == len(targets) - 1)
        raise self._final_error(trip)

    def _order(self, route: ModelRoute) -> list[Target]:
        targets = list(route.targets)
        if route.strategy == "weighted" and len(targets) > 1:
            weights = [target.weight for target in targets]
            first = self.random.choices(range(len(targets)), weights=weights)[0]
            targets.insert(0, targets.pop(first))
        return targets

    async def _attempts(
        self, ctx: RequestContext, target: Target, trip: Trip
    ) -> UpstreamResponse:
        breaker = self.services.breakers.of(target.name)
        retry = 0
        while True:
            permit = breaker.acquire()
            if permit is None:
                raise Skip(f"its circuit breaker is {breaker.state.value}")
            try:
                return await self._attempt(ctx, target, trip, breaker, permit)
            except ProviderError as exc:
                trip.last = exc
                self._give_up_unless_retryable(exc, retry)
            await self._wait(target, retry, trip)
            retry += 1

    async def _attempt(
        self,
        ctx: RequestContext,
        target: Target,
        trip: Trip,
        breaker: Breaker,
        permit: Permit,
    ) -> UpstreamResponse:
        remaining = trip.deadline - time.monotonic()
        if remaining <= 0:
            breaker.record(permit, Verdict.NONE)
            trip.deadline_passed = True
            raise Skip("the request deadline has passed")

        trip.attempts += 1
        started = time.monotonic()
        verdict = Verdict.NONE
        try:
            response = await self._call(ctx, target, remaining)
            verdict = self._judge_speed(time.monotonic() - started)
            return response
        except ProviderError as exc:
            verdict = _judge(exc)
            raise
        finally:
            ctx.upstream_seconds += time.monotonic() - started
            breaker.record(permit, verdict)

    async def _call(
        self, ctx: RequestContext, target: Target, remaining: float
    ) -> UpstreamResponse:
        provider = self.services.providers[target.provider]
        response = await dispatch(provider, ctx, target, remaining)
        if response.stream is not None:
            response.stream = await prime(target.name, response.stream)
        return response

    # TODO(breaker-streams): a stream that breaks after its first chunk counts as
    # a success, and a whole answer's "first byte" is its last (httpx reads the
    # body before the provider returns): slow-call detection is coarse there.
    def _judge_speed(self, first_byte_seconds: float) -> Verdict:
        if first_byte_seconds > self.services.breakers.policy.slow_call_seconds:
            return Verdict.SLOW
        return Verdict.SUCCESS

    def _give_up_unless_retryable(self, exc: ProviderError, retry: int) -> None:
        if exc.status in CLIENT_ERRORS:
            raise InvalidRequest(f"the provider refused the request: {exc}") from exc
        if not self._retryable(exc):
            raise Skip(str(exc)) from exc
        if retry >= self.config.retries:
            raise Skip(f"{retry + 1} attempts failed; last: {exc}") from exc
        cap = self.config.retry_after_cap_seconds
        if exc.retry_after is not None and exc.retry_after > cap:
            raise Skip(
                f"it asks to wait {exc.retry_after:g}s, over the "
                f"retry_after_cap_seconds of {cap:g}s"
            ) from exc

    def _retryable(self, exc: ProviderError) -> bool:
        if exc.status is not None and exc.status >= 400:
            return exc.status in self.config.retry_statuses
        if exc.timeout:
            return self.config.retry_on_timeout
        return exc.retryable and (
            exc.status is not None or self.config.retry_on_connection_error
        )

    async def _wait(self, target: Target, retry: int, trip: Trip) -> None:
        delay = self._backoff(retry)
        hint = trip.last.retry_after if trip.last is not None else None
        if hint is not None:
            delay = max(delay, hint)
        if time.monotonic() + delay >= trip.deadline:
            trip.deadline_passed = True
            raise Skip(f"waiting {delay:.3f}s more would pass the request deadline")
        if not self.services.retry_budget.withdraw():
            self.services.metrics.reliability.retries_refused.labels(
                target=target.name
            ).inc()
            raise Skip("the process's retry budget is spent")

        self.services.metrics.reliability.retries.labels(target=target.name).inc()
        trip.waits.append(delay)
        await asyncio.sleep(delay)

    def _backoff(self, retry: int) -> float:
        """Full jitter: uniform between 0 and the capped exponential step."""
        step = self.config.backoff_base_seconds * 2**retry
        return self.random.uniform(0, min(self.config.backoff_max_seconds, step))

    def _pass_rate_limit(self, trip: Trip, *, last: bool) -> None:
        """On the last target, a 429 whose wait is over the cap goes through."""
        exc = trip.last
        cap = self.config.retry_after_cap_seconds
        if not last or exc is None or exc.status != 429 or exc.retry_after is None:
            return
        if exc.retry_after > cap:
            raise RateLimitExceeded(
                f"the provider is rate limiting and asks to wait "
                f"{exc.retry_after:g}s, longer than this route waits "
                f"({cap:g}s); retry after that",
                headers={"retry-after": str(max(1, round(exc.retry_after)))},
            ) from exc

    def _final_error(self, trip: Trip) -> GatewayError:
        last = trip.last
        if trip.deadline_passed or (last is not None and last.timeout):
            return UpstreamTimeout(
                f"the request deadline of {self.config.deadline_seconds:g}s "
                f"passed before a target answered; last: {last}"
            )
        if last is None:
            return UpstreamUnavailable(
                "every target of this model is behind an open circuit breaker; "
                "retry in a few seconds"
            )
        if last.status is None:
            return UpstreamUnavailable(f"no target could be reached; last: {last}")
        return UpstreamFailed(
            f"the provider answered with an error after retries: {last}"
        )


def _judge(exc: ProviderError) -> Verdict:
    """What a failed attempt says about the target's health."""
    if exc.status is None or exc.status >= 500 or exc.status in (200, 408):
        return Verdict.FAILURE
    if exc.status in CLIENT_ERRORS:
        return Verdict.SUCCESS  # the provider is up; the request was wrong
    return Verdict.NONE  # 401/403 (the key), 429 (a quota): not its health
