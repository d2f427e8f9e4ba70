"""Spend from the usage ledger, grouped by model, API key or day.

The CLI (``sluicegate spend``) and the admin API read spend through
:func:`spend`; it sums the ledger, the truth, never the Redis counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from sluicegate.core.budgets.ledger import db_time
from sluicegate.core.budgets.prices import MICROS_PER_USD
from sluicegate.core.budgets.windows import window_at
from sluicegate.core.db.database import storage_errors

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

Grouping = Literal["model", "key", "day"]
Span = Literal["day", "month", "all"]

_DAY = {
    "postgres": "to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "sqlite": "substr(u.created_at, 1, 10)",
}


@dataclass(frozen=True)
class SpendRow:
    workspace: str
    group: str
    """The model, the API key prefix (``-`` for none) or the UTC day."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micros) / MICROS_PER_USD

    def as_json(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "group": self.group,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_micros": self.cost_micros,
            "cost_usd": str(self.cost_usd),
        }


async def spend(
    database: Database,
    *,
    workspace: str | None = None,
    key_prefix: str | None = None,
    by: Grouping = "model",
    span: Span = "month",
    now: datetime | None = None,
) -> list[SpendRow]:
    """Ledger totals per workspace and group over the current UTC ``span``."""
    group = _group_column(database, by)
    where, args = _filters(database, workspace, key_prefix, span, now)
    sql = (
        f"SELECT w.name AS workspace, {group} AS grp, count(*) AS requests, "
        "COALESCE(SUM(u.prompt_tokens), 0) AS prompt_tokens, "
        "COALESCE(SUM(u.completion_tokens), 0) AS completion_tokens, "
        "COALESCE(SUM(u.cost_micros), 0) AS cost_micros "
        "FROM usage u JOIN workspace w ON w.id = u.workspace_id "
        "LEFT JOIN api_key k ON k.id = u.key_id"
        f"{where} GROUP BY w.name, {group} ORDER BY w.name, {group}"
    )
    with storage_errors("reading spend from the usage ledger"):
        rows = await database.fetch(sql, *args)
    return [
        SpendRow(
            workspace=row["workspace"],
            group=str(row["grp"]) if row["grp"] is not None else "-",
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            cost_micros=int(row["cost_micros"]),
        )
        for row in rows
    ]


def _group_column(database: Database, by: Grouping) -> str:
    if by == "model":
        return "u.model"
    if by == "key":
        return "k.prefix"
    return _DAY[database.engine_type]


def _filters(
    database: Database,
    workspace: str | None,
    key_prefix: str | None,
    span: Span,
    now: datetime | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if workspace is not None:
        clauses.append("w.name = {}")
        args.append(workspace)
    if key_prefix is not None:
        clauses.append("k.prefix = {}")
        args.append(key_prefix)
    if span != "all":
        window = window_at(now or datetime.now(UTC), span)
        clauses.append("u.created_at >= {} AND u.created_at < {}")
        args += [db_time(database, window.start), db_time(database, window.end)]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
