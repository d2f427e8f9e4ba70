"""What every budget stage of a process shares: prices, stores and metrics.

Pipelines are rebuilt when their files change; the price book, the stores
(with the Redis store's memory of settlements that missed Redis), the ledger
writer and the Prometheus instruments must outlive them, so they live once per
process in ``services.extras["budgets"]``, made on first use (at the latest by
``core/budgets/lifecycle.py`` when the process starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter

from sluicegate.core.budgets.ledger_writer import LedgerWriter, ledger_spool
from sluicegate.core.budgets.prices import PriceBook
from sluicegate.core.budgets.redis_store import RedisBudgetStore
from sluicegate.core.budgets.sql_store import SqlBudgetStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sluicegate.core.budgets.limits import Counter as BudgetCounter
    from sluicegate.core.services import Services

EXTRAS_KEY = "budgets"


class BudgetMetrics:
    """Spend, tokens, denials and fallbacks of the budget stages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.spend = Counter(
            "sluicegate_budget_spend_micros",
            "Settled spend in micro-USD.",
            ["workspace", "model"],
            registry=registry,
        )
        self.tokens = Counter(
            "sluicegate_budget_tokens",
            "Settled prompt and completion tokens.",
            ["workspace", "model"],
            registry=registry,
        )
        self.denials = Counter(
            "sluicegate_budget_denials",
            "Requests refused because a budget had no room.",
            ["workspace", "scope", "measure", "per"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "sluicegate_budget_database_fallbacks",
            "Admissions enforced from the database because Redis failed.",
            registry=registry,
        )

    def denied(self, workspace: str, counter: BudgetCounter) -> None:
        self.denials.labels(
            workspace=workspace,
            scope=counter.scope,
            measure=counter.measure,
            per=counter.window.period,
        ).inc()


@dataclass
class BudgetServices:
    prices: PriceBook
    metrics: BudgetMetrics
    database_store: SqlBudgetStore
    redis_store: RedisBudgetStore | None
    ledger_writer: LedgerWriter


def budget_services(services: Services) -> BudgetServices:
    """The process's budget services, made on first use."""
    found = services.extras.get(EXTRAS_KEY)
    if isinstance(found, BudgetServices):
        return found
    writer = LedgerWriter(services.database, ledger_spool(services.settings.spool_dir))
    redis_store = None
    if services.redis is not None:
        redis_store = RedisBudgetStore(services.redis, services.database, writer)
    made = BudgetServices(
        prices=PriceBook(services.config),
        metrics=BudgetMetrics(services.metrics.registry),
        database_store=SqlBudgetStore(services.database, writer),
        redis_store=redis_store,
        ledger_writer=writer,
    )
    services.extras[EXTRAS_KEY] = made
    return made
