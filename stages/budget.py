"""The ``budget`` stage: reserve the most a request can cost, settle what it did.

Before the request is sent the stage caps its output (``default_max_tokens``
when the client sent no cap), estimates its prompt on the high side, prices
the estimate at the dearest target of the route, and reserves it on every
budget that applies, atomically: if any budget lacks room the request is
refused with 402 ``budget_exceeded`` and nothing is reserved.  After the
request, whatever happened, the reservation becomes the real cost from the
provider's usage, written once to the usage ledger, and the rest is released.

A route with a target of unknown price is refused with 403
``model_not_allowed`` by a stage that has USD budgets: the gateway cannot
keep a dollar budget for it, and no retry or top-up changes that; the
operator gives a ``price`` in the gateway config.

Redis down: ``on_failure: closed`` (the default) answers 503;
``on_failure: open`` enforces the budgets from the database instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from sluicegate.core.budgets.estimate import (
    DEFAULT_IMAGE_TOKENS,
    Estimate,
    ensure_output_cap,
    estimate,
)
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.limits import BudgetLimit, Counter, counters
from sluicegate.core.budgets.prices import micros
from sluicegate.core.budgets.shared import budget_services
from sluicegate.core.budgets.store import BudgetStore, Claim, Refusal
from sluicegate.core.budgets.stream import STRIP_USAGE_EVENT
from sluicegate.core.budgets.windows import http_date, zone
from sluicegate.core.context import Usage
from sluicegate.core.errors import BudgetExceeded, InfrastructureError, ModelNotAllowed
from sluicegate.core.http.schemas import MAX_OUTPUT_TOKENS
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)


class BudgetConfig(StageConfig):
    limits: list[BudgetLimit] = Field(min_length=1)
    timezone: str = Field(
        default="UTC",
        description="IANA zone whose calendar days and months the windows "
        "follow, unless a limit names its own.",
    )
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        le=MAX_OUTPUT_TOKENS,
        description="The output cap sent upstream when the client sent none.",
    )
    cap_field: Literal["max_completion_tokens", "max_tokens"] = Field(
        default="max_completion_tokens",
        description="The body field that carries default_max_tokens upstream.",
    )
    image_tokens: int = Field(
        default=DEFAULT_IMAGE_TOKENS,
        ge=0,
        description="Prompt tokens an image part is estimated at.",
    )
    hold_seconds: float = Field(
        default=660.0,
        gt=0,
        le=86_400,
        description="How long a reservation lives if its request never settles "
        "(a crashed process); keep it above the route's deadline_seconds.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value


@dataclass(frozen=True)
class Reservation:
    """What a request reserved, kept in ``ctx.scratch`` until it settles."""

    store: BudgetStore
    counters: list[Counter]
    admitted_at: datetime


class BudgetStage(Stage):
    """Token and USD budgets per workspace and API key; see the module."""

    type_name = "budget"
    Config = BudgetConfig
    config: BudgetConfig

    def __init__(self, config: BudgetConfig, services: Services) -> None:
        super().__init__(config, services)
        self.shared = budget_services(services)
        self.priced = any(limit.usd is not None for limit in config.limits)

    async def before(self, ctx: RequestContext) -> Deny | None:
        self._shape(ctx)
        now = datetime.now(UTC)
        found = counters(self.config.limits, ctx.principal, now, self.config.timezone)
        if not found:
            return None

        wanted = estimate(ctx.endpoint, ctx.body, self.config.image_tokens)
        cost = self._estimated_cost(ctx.model, wanted) if self.priced else 0
        if isinstance(cost, Deny):
            return cost
        claims = [_claim(counter, cost, wanted.total_tokens) for counter in found]

        store, refusal = await self._reserve(ctx.request_id, claims)
        if refusal is not None:
            self.shared.metrics.denied(ctx.principal.workspace, refusal.counter)
            return _deny(refusal)
        ctx.scratch[self.id] = Reservation(store, found, now)
        detail = f"up to {cost} micro-USD and {wanted.total_tokens} tokens"
        ctx.decide(self.id, "reserved", detail)
        return None

    async def after(self, ctx: RequestContext) -> None:
        reservation = ctx.scratch.pop(self.id, None)
        if not isinstance(reservation, Reservation):
            return
        usage, target = _used(ctx)
        cost = self._cost(ctx.model, target, usage)
        charges = [
            _claim(counter, cost, usage.total_tokens)
            for counter in reservation.counters
        ]
        entry = None
        if target is not None:
            entry = _entry(ctx, target, usage, cost, reservation.admitted_at)
        try:
            await reservation.store.settle(ctx.request_id, charges, entry)
        except InfrastructureError as exc:
            log.warning(
                "settling request %s on the %s store failed (its holds expire): %s",
                ctx.request_id,
                reservation.store.name,
                exc,
            )
        self._count(ctx, usage, cost)

    def _shape(self, ctx: RequestContext) -> None:
        """Cap the output and, for a stream, ask the provider for its usage."""
        if ctx.endpoint != "chat.completions":
            return
        config = self.config
        ensure_output_cap(ctx.body, config.default_max_tokens, config.cap_field)
        if not ctx.stream:
            return
        options = ctx.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return
        ctx.body["stream_options"] = {**(options or {}), "include_usage": True}
        ctx.scratch[STRIP_USAGE_EVENT] = True

    def _estimated_cost(self, model: str, wanted: Estimate) -> int | Deny:
        """The estimate's cost at the dearest target, in micro-USD."""
        prices = self.shared.prices
        unpriced = prices.unpriced(model)
        if unpriced:
            return Deny.of(
                ModelNotAllowed(
                    f"model {model!r} cannot be used under a USD budget: no price "
                    f"is known for {', '.join(unpriced)}; give the target a price "
                    "in the gateway config (price: {input_per_mtok: ..., "
                    "output_per_mtok: ...})"
                )
            )
        usage = Usage(wanted.prompt_tokens, wanted.completion_tokens, 0)
        costs = [Decimal(0)]
        for target in self.services.config.models[model].targets:
            pricer = prices.for_target(model, target)
            if pricer is not None:
                costs.append(pricer.cost(usage))
        return micros(max(costs), estimate=True)

    def _cost(self, model: str, target: str | None, usage: Usage) -> int:
        if target is None or usage.total_tokens == 0:
            return 0
        pricer = self.shared.prices.for_target_name(model, target)
        return micros(pricer.cost(usage)) if pricer is not None else 0

    async def _reserve(
        self, request_id: str, claims: list[Claim]
    ) -> tuple[BudgetStore, Refusal | None]:
        """Reserve on Redis, or on the database without Redis or when Redis
        fails and the stage fails open."""
        shared = self.shared
        database = shared.database_store
        if shared.redis_store is None:
            return database, await database.reserve(
                request_id, claims, self.config.hold_seconds
            )
        try:
            return shared.redis_store, await shared.redis_store.reserve(
                request_id, claims, self.config.hold_seconds
            )
        except InfrastructureError as exc:
            if not self.fails_open:
                raise
            log.warning("budgets enforced from the database: %s", exc)
            shared.metrics.fallbacks.inc()
        return database, await database.reserve(
            request_id, claims, self.config.hold_seconds
        )

    def _count(self, ctx: RequestContext, usage: Usage, cost: int) -> None:
        metrics = self.shared.metrics
        labels = {"workspace": ctx.principal.workspace, "model": ctx.model}
        metrics.spend.labels(**labels).inc(cost)
        metrics.tokens.labels(**labels).inc(usage.total_tokens)


def _claim(counter: Counter, cost: int, tokens: int) -> Claim:
    return Claim(counter, cost if counter.measure == "usd" else tokens)


def _used(ctx: RequestContext) -> tuple[Usage, str | None]:
    """What the request really used and the target that served it."""
    response = ctx.response
    if response is None:
        return Usage(), None
    return response.usage or Usage(), response.target


def _entry(
    ctx: RequestContext, target: str, usage: Usage, cost: int, admitted_at: datetime
) -> Entry:
    outcome = ctx.outcome
    return Entry(
        request_id=ctx.request_id,
        workspace_id=ctx.principal.workspace_id,
        key_id=ctx.principal.key_id,
        model=ctx.model,
        target=target,
        status=outcome.status if outcome is not None else 0,
        usage=usage,
        cost_micros=cost,
        admitted_at=admitted_at,
    )


def _deny(refusal: Refusal) -> Deny:
    counter = refusal.counter
    reset = http_date(counter.window.reset)
    message = (
        f"{counter.describe()} has no room for this request: spent "
        f"{counter.show(refusal.spent)}, reserved by requests in flight "
        f"{counter.show(refusal.reserved)}, this request may use up to "
        f"{counter.show(refusal.wanted)}; the budget resets at {reset}"
    )
    headers = {
        "x-sluicegate-budget-limit": _header_amount(counter, counter.limit),
        "x-sluicegate-budget-spent": _header_amount(counter, refusal.spent),
        "x-sluicegate-budget-reserved": _header_amount(counter, refusal.reserved),
        "x-sluicegate-budget-unit": counter.measure,
        "x-sluicegate-budget-reset": reset,
    }
    return Deny.of(BudgetExceeded(message, headers))


def _header_amount(counter: Counter, amount: int) -> str:
    """USD with six decimals, or whole tokens."""
    if counter.measure == "usd":
        return f"{Decimal(amount) / Decimal(1_000_000):.6f}"
    return str(amount)
