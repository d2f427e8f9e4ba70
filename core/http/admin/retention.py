"""A workspace's audit retention policy over the admin API: read the one that
applies, store one, clear it.  Through :mod:`sluicegate.core.audit.policy`,
as ``sluicegate retention show|set|clear`` do.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sluicegate.core.audit.policy import Policy, clear_policy, policies, set_policy
from sluicegate.core.http.admin import models
from sluicegate.core.http.admin.call import Call, visible_workspace
from sluicegate.core.workspaces import WorkspaceRow


async def get_retention_op(call: Call, workspace: str) -> models.RetentionPolicy:
    row = await visible_workspace(call, workspace)
    return _policy(await _applying(call, row))


async def set_retention_op(call: Call, workspace: str) -> models.RetentionPolicy:
    row = await visible_workspace(call, workspace)
    body: models.RetentionSet = call.body
    stored = await set_policy(
        call.gateway.services.database,
        row.name,
        body.payload_days,
        body.record_days,
        datetime.now(UTC),
    )
    return _policy(stored)


async def clear_retention_op(call: Call, workspace: str) -> models.RetentionCleared:
    row = await visible_workspace(call, workspace)
    removed = await clear_policy(call.gateway.services.database, row.name)
    applying = _policy(await _applying(call, row))
    return models.RetentionCleared(**applying.model_dump(), removed=removed)


async def _applying(call: Call, row: WorkspaceRow) -> Policy:
    services = call.gateway.services
    [policy] = await policies(
        services.database, services.settings.pipelines_dir, row.name
    )
    return policy


def _policy(policy: Policy) -> models.RetentionPolicy:
    return models.RetentionPolicy(
        workspace=policy.workspace,
        payload_days=policy.payload_days,
        record_days=policy.record_days,
        source=policy.source,
    )
