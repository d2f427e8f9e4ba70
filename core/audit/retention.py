"""Applying retention policies: expired payloads deleted, old records dropped.

For each workspace with a policy (:mod:`.policy`), :func:`apply_policy` works
in *sweeps*, one transaction each, until nothing is left to do.  A sweep

1. locks the workspace's chain head;
2. picks the records to drop: the oldest ones, from the start of what is
   left up to (not including) the first record younger than ``record_days``,
   at most ``batch`` of them;
3. picks the payloads to delete: those of the records it drops, and those
   older than ``payload_days``;
4. appends a ``retention`` audit record stating all of that (counts, the
   digest of the payloads' request ids, the checkpoint);
5. grants and deletes the payloads (:mod:`.deletion`);
6. when dropping records: writes the checkpoint (the last dropped seq and its
   hash, explained by the record of step 4), deletes the grants and the
   records it covers, and closes the checkpoint.  The database allows those
   deletions only behind a checkpoint in progress in the same transaction
   (migration ``m20261203_1840_retention``).

Verification then starts at the newest checkpoint instead of seq 1
(:mod:`.verify`).  ``now`` is a parameter so tests control the clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sluicegate.core.audit.deletion import (
    append_event,
    delete_payloads,
    delete_where_in,
    ids_digest,
    lock_chain,
)
from sluicegate.core.audit.policy import Policy, policies
from sluicegate.core.db.database import Database, storage_errors

if TYPE_CHECKING:
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

# TODO(retention-evals): evaluation results and risk scores of dropped records
# are kept (their tables are append-only); they hold scores and labels, not
# bodies, but they outlive record_days.
BATCH = 500
"""Records dropped (and payloads deleted by age) per transaction, at most."""
RETENTION_KIND = "retention"
EVERY_SECONDS = 3600
"""How often the scheduler runs :func:`retention_job`."""


@dataclass(frozen=True)
class Drop:
    """Records ``first``..``last`` of a workspace go; ``hash`` is that of last."""

    first: int
    last: int
    hash: str


@dataclass
class RetentionResult:
    """What one run did to one workspace."""

    workspace: str
    payloads_deleted: int = 0
    records_dropped: int = 0
    checkpoint_seq: int | None = None
    audit_records: list[str] = field(default_factory=list)
    """Request ids of the ``retention`` records written, in order."""


async def retention_job(services: Services) -> None:
    """The periodic job: apply every workspace's policy now."""
    found = await policies(services.database, services.settings.pipelines_dir)
    for result in await run_retention(services.database, found, datetime.now(UTC)):
        if result.audit_records:
            log.info(
                "retention in workspace %s: %d payloads deleted, %d records "
                "dropped (checkpoint at seq %s)",
                result.workspace,
                result.payloads_deleted,
                result.records_dropped,
                result.checkpoint_seq,
            )


async def run_retention(
    db: Database, found: list[Policy], now: datetime, batch: int = BATCH
) -> list[RetentionResult]:
    """Apply each policy that deletes anything; one result per such workspace."""
    return [
        await apply_policy(db, policy, now, batch)
        for policy in found
        if policy.deletes_anything
    ]


async def apply_policy(
    db: Database, policy: Policy, now: datetime, batch: int = BATCH
) -> RetentionResult:
    """Sweep ``policy``'s workspace until nothing it covers is left."""
    result = RetentionResult(policy.workspace)
    with storage_errors(f"applying retention in workspace {policy.workspace!r}"):
        while await _sweep(db, policy, now, batch, result):
            pass
    return result


async def _sweep(
    db: Database, policy: Policy, now: datetime, batch: int, result: RetentionResult
) -> bool:
    """One transaction of work; False when there was nothing to do."""
    workspace_id = policy.workspace_id
    async with db.transaction():
        await lock_chain(db, workspace_id)
        drop = await _droppable(
            db, workspace_id, _cutoff(now, policy.record_days), batch
        )
        payloads = await _expired_payloads(
            db, workspace_id, drop, _cutoff(now, policy.payload_days), 2 * batch
        )
        if drop is None and not payloads:
            return False

        record = await append_event(
            db, workspace_id, RETENTION_KIND, now, _fields(policy, drop, payloads)
        )
        await delete_payloads(db, payloads, record, now)
        if drop is not None:
            await _drop_records(db, workspace_id, drop, record.pending.request_id, now)

    result.audit_records.append(record.pending.request_id)
    result.payloads_deleted += len(payloads)
    if drop is not None:
        result.records_dropped += drop.last - drop.first + 1
        result.checkpoint_seq = drop.last
    return True


def _cutoff(now: datetime, days: int | None) -> datetime | None:
    return None if days is None else now - timedelta(days=days)


async def _droppable(
    db: Database, workspace_id: int, cutoff: datetime | None, batch: int
) -> Drop | None:
    if cutoff is None:
        return None
    [span] = await db.fetch(
        "SELECT min(seq) AS first, max(seq) AS last FROM audit_record "
        "WHERE workspace_id = {}",
        workspace_id,
    )
    if span["first"] is None:
        return None
    [young] = await db.fetch(
        "SELECT min(seq) AS seq FROM audit_record "
        "WHERE workspace_id = {} AND created_at >= {}",
        workspace_id,
        cutoff,
    )
    first = int(span["first"])
    last = int(young["seq"]) - 1 if young["seq"] is not None else int(span["last"])
    last = min(last, first + batch - 1)
    if last < first:
        return None
    [row] = await db.fetch(
        "SELECT hash FROM audit_record WHERE workspace_id = {} AND seq = {}",
        workspace_id,
        last,
    )
    return Drop(first, last, str(row["hash"]))


async def _expired_payloads(
    db: Database,
    workspace_id: int,
    drop: Drop | None,
    cutoff: datetime | None,
    limit: int,
) -> list[str]:
    """Request ids of payloads to delete: of dropped records, or too old."""
    conditions: list[str] = []
    args: list[object] = []
    if drop is not None:
        conditions.append("r.seq <= {}")
        args.append(drop.last)
    if cutoff is not None:
        conditions.append("p.created_at < {}")
        args.append(cutoff)
    if not conditions:
        return []
    rows = await db.fetch(
        "SELECT p.request_id FROM audit_payload p "
        "JOIN audit_record r ON r.request_id = p.request_id "
        f"WHERE p.workspace_id = {{}} AND ({' OR '.join(conditions)}) "
        "ORDER BY r.seq LIMIT {}",
        workspace_id,
        *args,
        limit,
    )
    return [str(row["request_id"]) for row in rows]


def _fields(
    policy: Policy, drop: Drop | None, payloads: list[str]
) -> dict[str, object]:
    checkpoint = None if drop is None else {"seq": drop.last, "hash": drop.hash}
    return {
        "payload_days": policy.payload_days,
        "record_days": policy.record_days,
        "payloads_deleted": len(payloads),
        "payload_request_ids_sha256": ids_digest(payloads),
        "records_dropped": 0 if drop is None else drop.last - drop.first + 1,
        "checkpoint": checkpoint,
    }


async def _drop_records(
    db: Database, workspace_id: int, drop: Drop, explained_by: str, now: datetime
) -> None:
    """Checkpoint, then delete records first..last and the grants they made."""
    [checkpoint] = await db.fetch(
        "INSERT INTO audit_checkpoint "
        "(workspace_id, seq, hash, explained_by, created_at) "
        "VALUES ({}, {}, {}, {}, {}) RETURNING id",
        workspace_id,
        drop.last,
        drop.hash,
        explained_by,
        now,
    )
    granting = await db.fetch(
        "SELECT request_id FROM audit_record WHERE workspace_id = {} AND seq <= {}",
        workspace_id,
        drop.last,
    )
    ids = [str(row["request_id"]) for row in granting]
    await delete_where_in(db, "audit_deletion_grant", "granted_by", ids)
    await db.fetch(
        "DELETE FROM audit_record WHERE workspace_id = {} AND seq <= {}",
        workspace_id,
        drop.last,
    )
    await db.fetch(
        "UPDATE audit_checkpoint SET in_progress = {} WHERE id = {}",
        False,
        checkpoint["id"],
    )
