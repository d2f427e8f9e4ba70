"""Budget limits as a pipeline file declares them, and the counters they apply.

A :class:`BudgetLimit` is one line of a ``budget`` stage's ``limits``:
``{scope: workspace, usd: 500, per: month}``.  For one request it becomes a
:class:`Counter`: the limit of one workspace or API key in the current window,
with a ``key`` that names it in Redis and in the ``budget_hold`` table.  Two
pipelines with the same scope, measure, period and time zone share a counter,
because spend is spend whichever pipeline admitted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluicegate.core.budgets.prices import MICROS_PER_USD
from sluicegate.core.budgets.windows import Period, Window, window_at, zone
from sluicegate.core.context import Principal

Scope = Literal["workspace", "api_key"]
Measure = Literal["usd", "tokens"]


class BudgetLimit(BaseModel):
    """One budget: a scope, an amount in USD or tokens, and a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope
    usd: Decimal | None = Field(default=None, gt=0, description="US dollars.")
    tokens: int | None = Field(default=None, gt=0, description="Prompt + output.")
    per: Period
    timezone: str | None = Field(
        default=None,
        description="IANA zone whose calendar the window follows; "
        "default: the stage's timezone.",
    )

    @model_validator(mode="after")
    def _one_amount(self) -> BudgetLimit:
        if (self.usd is None) == (self.tokens is None):
            raise ValueError("give exactly one of usd and tokens")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @property
    def measure(self) -> Measure:
        return "usd" if self.usd is not None else "tokens"

    @property
    def amount(self) -> int:
        """The limit in micro-USD or tokens."""
        if self.usd is not None:
            return int(self.usd * MICROS_PER_USD)
        assert self.tokens is not None
        return self.tokens


@dataclass(frozen=True)
class Counter:
    """One budget of one workspace or API key in its current window."""

    scope: Scope
    scope_id: int
    owner: str
    """The workspace name or the API key prefix, for messages."""
    measure: Measure
    limit: int
    window: Window

    @property
    def key(self) -> str:
        """Its name in storage: ``workspace:3:usd:day:UTC:2026-12-03``."""
        window = self.window
        return (
            f"{self.scope}:{self.scope_id}:{self.measure}:{window.period}:"
            f"{window.timezone}:{window.label}"
        )

    def describe(self) -> str:
        """E.g. ``the daily USD budget of workspace 'acme' ($5.00)``."""
        period = "daily" if self.window.period == "day" else "monthly"
        owner = "workspace" if self.scope == "workspace" else "API key"
        return (
            f"the {period} {self.measure_name} budget of {owner} {self.owner!r} "
            f"({self.show(self.limit)})"
        )

    @property
    def measure_name(self) -> str:
        return "USD" if self.measure == "usd" else "token"

    def show(self, amount: int) -> str:
        """An amount of this counter's measure, for people."""
        if self.measure == "usd":
            return f"${Decimal(amount) / MICROS_PER_USD:.6f}".rstrip("0").rstrip(".")
        return f"{amount} tokens"


def counters(
    limits: list[BudgetLimit], principal: Principal, now: datetime, timezone: str
) -> list[Counter]:
    """The counters of ``limits`` that apply to ``principal`` at ``now``.

    An ``api_key`` limit does not apply to a principal without an API key (a
    plugin's authentication); the workspace limits still do.
    """
    found: list[Counter] = []
    for limit in limits:
        scope_id = _scope_id(limit.scope, principal)
        if scope_id is None:
            continue
        owner = principal.workspace
        if limit.scope == "api_key":
            owner = principal.key_prefix or str(scope_id)
        window = window_at(now, limit.per, limit.timezone or timezone)
        found.append(
            Counter(limit.scope, scope_id, owner, limit.measure, limit.amount, window)
        )
    return found


def _scope_id(scope: Scope, principal: Principal) -> int | None:
    return principal.workspace_id if scope == "workspace" else principal.key_id
