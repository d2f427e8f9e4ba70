"""The ``route`` stage: send the request to a target and hand back its answer.

A public model's targets are tried in order (fallback) or by weight; each
target gets ``retries`` more attempts after a retryable failure, with
exponential backoff and full jitter, all within ``deadline_seconds`` for the
whole request.  The first target that answers serves the request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from pydantic import Field

from sluicegate.core.errors import (
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sluicegate.core.gateway_config import ModelRoute, Target
from sluicegate.core.provider import UpstreamCall
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext, UpstreamResponse
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

CLIENT_ERRORS = frozenset({400, 404, 413, 422})
"""Upstream statuses that blame the request itself: passed to the client."""


class RouteConfig(StageConfig):
    retries: int = Field(default=2, ge=0, le=10, description="Per target.")
    deadline_seconds: float = Field(default=600.0, gt=0, le=3600)
    backoff_base_seconds: float = Field(default=0.25, ge=0)
    backoff_max_seconds: float = Field(default=8.0, ge=0)


class RouteStage(Stage):
    """Calls the providers of the requested model's route."""

    type_name = "route"
    Config = RouteConfig
    produces_response = True

    def __init__(self, config: RouteConfig, services: Services) -> None:
        super().__init__(config, services)
        self.random = random.Random()

    async def before(self, ctx: RequestContext) -> Deny | None:
        route = self.services.config.models.get(ctx.model)
        if route is None:
            return Deny.of(ModelNotFound(f"no route for model {ctx.model!r}"))
        deadline = time.monotonic() + self.config.deadline_seconds
        ctx.response = await self._first_answer(ctx, route, deadline)
        ctx.decide(self.id, "served", ctx.response.target)
        return None

    async def _first_answer(
        self, ctx: RequestContext, route: ModelRoute, deadline: float
    ) -> UpstreamResponse:
        last: ProviderError | None = None
        for target in self._order(route):
            try:
                return await self._attempts(ctx, target, deadline)
            except ProviderError as exc:
                last = exc
                log.warning("target %s failed: %s", target.name, exc)
        raise _final_error(last)

    def _order(self, route: ModelRoute) -> list[Target]:
        targets = list(route.targets)
        if route.strategy == "weighted" and len(targets) > 1:
            weights = [target.weight for target in targets]
            first = self.random.choices(range(len(targets)), weights=weights)[0]
            targets.insert(0, targets.pop(first))
        return targets

    async def _attempts(
        self, ctx: RequestContext, target: Target, deadline: float
    ) -> UpstreamResponse:
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamTimeout(
                    f"the request deadline of {self.config.deadline_seconds:g}s passed"
                )
            try:
                return await self._call(ctx, target, remaining)
            except ProviderError as exc:
                if not exc.retryable or attempt >= self.config.retries:
                    _raise_client_error(exc)
                    raise
                await self._backoff(attempt, exc, deadline)
                attempt += 1

    async def _call(
        self, ctx: RequestContext, target: Target, remaining: float
    ) -> UpstreamResponse:
        provider = self.services.providers[target.provider]
        call = UpstreamCall(
            target=target.name,
            model=target.model,
            body={**ctx.body, "model": target.model},
            stream=ctx.stream,
            request_id=ctx.request_id,
            timeout=remaining,
        )
        started = time.perf_counter()
        try:
            if ctx.endpoint == "embeddings":
                return await provider.embeddings(call)
            return await provider.chat(call)
        finally:
            ctx.upstream_seconds += time.perf_counter() - started

    async def _backoff(self, attempt: int, exc: ProviderError, deadline: float) -> None:
        cap = min(
            self.config.backoff_max_seconds,
            self.config.backoff_base_seconds * 2**attempt,
        )
        delay = self.random.uniform(0, cap)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        if time.monotonic() + delay >= deadline:
            raise UpstreamTimeout(
                f"the request deadline of {self.config.deadline_seconds:g}s "
                f"leaves no time to retry after: {exc}"
            ) from exc
        await asyncio.sleep(delay)


def _raise_client_error(exc: ProviderError) -> None:
    if exc.status in CLIENT_ERRORS:
        raise InvalidRequest(f"the provider refused the request: {exc}") from exc


def _final_error(last: ProviderError | None) -> Exception:
    if last is None:
        return UpstreamUnavailable("the model's route has no target to try")
    if last.timeout:
        return UpstreamTimeout(f"every target timed out; last: {last}")
    if last.status is None or last.retryable:
        return UpstreamUnavailable(f"every target failed; last: {last}")
    return UpstreamFailed(f"the provider answered with an error: {last}")
