"""Evaluation jobs the queue could not take, kept in the database.

When the queue is unreachable, :func:`submit` stores the job in
``evaluation_deferred`` instead of dropping it, and makes sure a re-queuer runs
in this process: every ``SLUICEGATE_EVAL_REQUEUE_SECONDS`` it hands stored jobs
to the queue, deleting each once queued.  ``sluicegate worker`` runs the same
re-queuer, so jobs deferred by a gateway that has since stopped are delivered
too.  Two re-queuers may hand the same job over twice; a job run twice stores
its results once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluicegate.core.db.database import storage_errors
from sluicegate.core.errors import InfrastructureError, StorageError
from sluicegate.core.evals.jobs import EvalJob

if TYPE_CHECKING:
    from sluicegate.core.evals.queue import EvalQueue
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

BATCH = 100
REQUEUER_KEY = "sluicegate.evals.requeuer"


async def submit(services: Services, queue: EvalQueue, job: EvalJob) -> None:
    """Queue ``job``, or defer it to the database when the queue is away."""
    try:
        await queue.enqueue(job)
        return
    except InfrastructureError as exc:
        reason = str(exc)
    log.warning("evaluation of %s deferred: %s", job.request_id, reason)
    await defer(services, job, reason)
    services.metrics.evals.deferred.inc()
    ensure_requeuer(services, queue)


async def defer(services: Services, job: EvalJob, reason: str) -> None:
    """Store ``job`` durably; StorageError when the database refuses too."""
    # TODO(eval-spool): with the queue and the database both down the job is
    # lost (logged); the audit trail's disk spool could hold it instead.
    with storage_errors(f"deferring the evaluation of {job.request_id}"):
        await services.database.fetch(
            "INSERT INTO evaluation_deferred (request_id, job, reason, created_at) "
            "VALUES ({}, {}, {}, {})",
            job.request_id,
            job.model_dump_json(),
            reason[:1000],
            datetime.now(UTC),
        )


def ensure_requeuer(services: Services, queue: EvalQueue) -> None:
    """Start this process's re-queuer unless it runs already."""
    if services.extras.get(REQUEUER_KEY) is None:
        interval = services.settings.eval_requeue_seconds
        services.extras[REQUEUER_KEY] = services.spawn(
            requeue_loop(services, queue, interval), forever=True
        )


async def requeue_loop(services: Services, queue: EvalQueue, interval: float) -> None:
    """Hand deferred jobs to the queue every ``interval`` seconds, forever."""
    while True:
        await asyncio.sleep(interval)
        try:
            await requeue_once(services, queue)
        except (StorageError, InfrastructureError) as exc:
            log.warning("deferred evaluations not re-queued yet: %s", exc)


async def requeue_deferred(services: Services) -> None:
    """The periodic job: one pass of the re-queuer (needs ``services.evals``)."""
    if services.evals is not None:
        await requeue_once(services, services.evals)


async def requeue_once(services: Services, queue: EvalQueue) -> int:
    """Queue up to one batch of deferred jobs; return how many were queued."""
    db = services.database
    lock = " FOR UPDATE SKIP LOCKED" if db.is_postgres else ""
    queued = 0
    with storage_errors("re-queuing deferred evaluations"):
        async with db.transaction():
            rows = await db.fetch(
                f"SELECT id, job FROM evaluation_deferred ORDER BY id LIMIT {BATCH}"
                + lock
            )
            for row in rows:
                try:
                    await queue.enqueue(EvalJob.model_validate_json(row["job"]))
                except InfrastructureError as exc:
                    log.info("the evaluation queue is still unreachable: %s", exc)
                    break
                await db.fetch(
                    "DELETE FROM evaluation_deferred WHERE id = {}", row["id"]
                )
                queued += 1
    if queued:
        log.info("re-queued %d deferred evaluations", queued)
    return queued
