"""Usage and spend of a workspace over a time range, from the usage ledger.

The admin API's ``GET /admin/v1/workspaces/{workspace}/usage`` and any command
that reports usage read it through :func:`usage_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluicegate.core.budgets.ledger import db_time
from sluicegate.core.db.database import storage_errors

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int


@dataclass(frozen=True)
class UsageSummary:
    """Totals of one workspace in ``[since, until)``, and per public model."""

    since: datetime
    until: datetime
    models: list[ModelUsage] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(model, name)) for model in self.models)


async def usage_summary(
    db: Database, workspace_id: int, since: datetime, until: datetime
) -> UsageSummary:
    """Sum the ledger rows of ``workspace_id`` created in ``[since, until)``."""
    with storage_errors("summing the usage ledger"):
        rows = await db.fetch(
            "SELECT model, COUNT(*) AS requests, "
            "COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(completion_tokens), 0) AS completion_tokens, "
            "COALESCE(SUM(cached_tokens), 0) AS cached_tokens, "
            "COALESCE(SUM(cost_micros), 0) AS cost_micros FROM usage "
            "WHERE workspace_id = {} AND created_at >= {} AND created_at < {} "
            "GROUP BY model ORDER BY model",
            workspace_id,
            db_time(db, since),
            db_time(db, until),
        )
    models = [
        ModelUsage(
            model=row["model"],
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            cached_tokens=int(row["cached_tokens"]),
            cost_micros=int(row["cost_micros"]),
        )
        for row in rows
    ]
    return UsageSummary(since, until, models)
