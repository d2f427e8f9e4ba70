"""The usage ledger: one row per request id, the truth behind every budget.

:func:`record` writes a request's row once: a second write with the same
request id changes nothing (``ON CONFLICT (request_id) DO NOTHING``), so a
retried settlement can never charge twice.  :func:`spent` sums a counter's
window from the ledger; Redis counters are rebuilt from it.

A row's ``created_at`` is the time the request was admitted, not the time it
settled, so a request that straddles midnight is charged to the window its
reservation was made in, in Redis and in the ledger alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluicegate.core.context import Usage
from sluicegate.core.db.database import storage_errors

if TYPE_CHECKING:
    from sluicegate.core.budgets.limits import Counter
    from sluicegate.core.db.database import Database

SUMS = {
    "usd": "cost_micros",
    "tokens": "prompt_tokens + completion_tokens",
}
SCOPE_COLUMNS = {"workspace": "workspace_id", "api_key": "key_id"}


@dataclass(frozen=True)
class Entry:
    """One request's row of the ledger."""

    request_id: str
    workspace_id: int
    key_id: int | None
    model: str
    target: str | None
    status: int
    usage: Usage
    cost_micros: int
    admitted_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A plain form for the spool file; :meth:`from_json` reads it back."""
        plain = asdict(self)
        plain["admitted_at"] = self.admitted_at.isoformat()
        return plain

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        admitted_at = datetime.fromisoformat(data["admitted_at"])
        if admitted_at.tzinfo is None:
            raise ValueError(f"admitted_at {data['admitted_at']!r} has no zone")
        return cls(
            request_id=str(data["request_id"]),
            workspace_id=int(data["workspace_id"]),
            key_id=None if data["key_id"] is None else int(data["key_id"]),
            model=str(data["model"]),
            target=None if data["target"] is None else str(data["target"]),
            status=int(data["status"]),
            usage=Usage(**{name: int(n) for name, n in data["usage"].items()}),
            cost_micros=int(data["cost_micros"]),
            admitted_at=admitted_at,
        )


def db_time(database: Database, when: datetime) -> Any:
    """``when`` as the database stores timestamps.

    SQLite keeps ISO-8601 UTC text (``YYYY-MM-DD HH:MM:SS.fff+00:00``), which
    compares correctly as text; PostgreSQL takes the aware datetime.
    """
    if not database.is_sqlite:
        return when
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}+00:00"


async def record(database: Database, entry: Entry) -> None:
    """Write ``entry`` unless a row with its request id exists already."""
    usage = entry.usage
    values = (
        entry.request_id,
        entry.workspace_id,
        entry.key_id,
        entry.model,
        entry.target,
        entry.status,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        entry.cost_micros,
        db_time(database, entry.admitted_at),
    )
    with storage_errors(f"writing the ledger row of request {entry.request_id}"):
        await database.fetch(
            "INSERT INTO usage (request_id, workspace_id, key_id, model, target, "
            "status, prompt_tokens, completion_tokens, cached_tokens, cost_micros, "
            "created_at) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) "
            "ON CONFLICT (request_id) DO NOTHING",
            *values,
        )


async def spent(database: Database, counter: Counter) -> int:
    """What the ledger holds for ``counter``'s scope and window."""
    with storage_errors(f"summing the ledger for budget counter {counter.key}"):
        rows = await database.fetch(
            f"SELECT COALESCE(SUM({SUMS[counter.measure]}), 0) AS spent FROM usage "
            f"WHERE {SCOPE_COLUMNS[counter.scope]} = {{}} "
            "AND created_at >= {} AND created_at < {}",
            counter.scope_id,
            db_time(database, counter.window.start),
            db_time(database, counter.window.end),
        )
    return int(rows[0]["spent"])
