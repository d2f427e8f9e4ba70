"""What a budget store does: reserve atomically, settle, say why it refused.

Two stores implement :class:`BudgetStore`: :mod:`.redis_store` (one Lua
script per admission, shared by every gateway process) and :mod:`.sql_store`
(one database transaction; the embedded default without Redis, and the
fallback of ``on_failure: open`` when Redis is down).  Both keep the same
rule: a request is admitted only if, for **every** counter it touches,
``spent + reserved + its estimate <= limit``, and then its estimate is
reserved on all of them at once; otherwise nothing is reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.limits import Counter


@dataclass(frozen=True)
class Claim:
    """An amount (micro-USD or tokens) on one counter."""

    counter: Counter
    amount: int


@dataclass(frozen=True)
class Refusal:
    """The counter that had no room, and what it held."""

    counter: Counter
    spent: int
    reserved: int
    wanted: int


class BudgetStore(Protocol):
    name: str

    async def reserve(
        self, request_id: str, claims: list[Claim], hold_seconds: float
    ) -> Refusal | None:
        """Reserve every claim, or none and return the first that does not fit.

        Raise :class:`~sluicegate.core.errors.InfrastructureError` when the
        backing service fails.
        """
        ...

    async def settle(
        self, request_id: str, charges: list[Claim], entry: Entry | None
    ) -> None:
        """Replace the request's holds with ``charges`` (what it really used)
        and write ``entry`` to the ledger (None: nothing came back)."""
        ...
