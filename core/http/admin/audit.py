"""The audit trail over the admin API: verify a workspace's chain, export its
records as JSON Lines.  Both call what ``sluicegate audit verify|export`` call
(:mod:`sluicegate.core.audit.verify`, :mod:`sluicegate.core.audit.export`).
"""

from __future__ import annotations

from dataclasses import asdict

from sluicegate.core.audit.export import Range, export_lines
from sluicegate.core.audit.verify import verify
from sluicegate.core.http.admin import models
from sluicegate.core.http.admin.call import Call, Lines, visible_workspace


async def verify_audit_op(call: Call, workspace: str) -> models.AuditVerification:
    row = await visible_workspace(call, workspace)
    [chain] = await verify(call.gateway.services.database, row.name)
    return models.AuditVerification(**asdict(chain), ok=chain.ok)


async def export_audit_op(call: Call, workspace: str) -> Lines:
    row = await visible_workspace(call, workspace)
    query: models.AuditExportQuery = call.query
    wanted = Range(row.name, query.from_seq, query.to_seq)
    return await Lines.primed(export_lines(call.gateway.services.database, wanted))
