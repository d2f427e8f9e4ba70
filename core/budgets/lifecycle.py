"""Starting and stopping a process's ledger writer (a built-in plugin).

At start, the writer adopts the ledger spool files of processes that stopped
with rows the database had not taken, and writes them; at stop, it keeps what
is still unwritten in its own file for the next process.  Gateways and
workers both run this, so a stopped gateway's rows are written by whichever
process next starts on the same spool directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluicegate.core.budgets.shared import EXTRAS_KEY, BudgetServices, budget_services
from sluicegate.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from sluicegate.core.services import Services


@hookimpl
async def sluicegate_startup(services: Services) -> None:
    await budget_services(services).ledger_writer.start()


@hookimpl
async def sluicegate_shutdown(services: Services) -> None:
    shared = services.extras.get(EXTRAS_KEY)
    if isinstance(shared, BudgetServices):
        await shared.ledger_writer.close()
