"""``GET /workspaces/{workspace}/spend``: the ledger's spend, as ``sluicegate
spend --json`` prints it (both read :func:`~sluicegate.core.budgets.report.spend`).
"""

from __future__ import annotations

from sluicegate.core.budgets.report import spend
from sluicegate.core.http.admin import models
from sluicegate.core.http.admin.call import Call, visible_workspace


async def spend_op(call: Call, workspace: str) -> models.Spend:
    row = await visible_workspace(call, workspace)
    query: models.SpendQuery = call.query
    rows = await spend(
        call.gateway.services.database,
        workspace=row.name,
        key_prefix=query.key,
        by=query.by,
        span=query.window,
    )
    return models.Spend(
        workspace=row.name,
        by=query.by,
        window=query.window,
        data=[models.SpendRow(**found.as_json()) for found in rows],
    )
