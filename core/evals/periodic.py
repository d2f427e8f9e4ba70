"""Periodic jobs: what ``sluicegate scheduler`` starts on a timer.

A :class:`PeriodicTask` names an async function of the process's services
and how often it runs.  With Redis the scheduler sends each one to the queue
on its interval and a worker runs it; without Redis the scheduler process runs
them itself.  To add one (the audit retention job, say), define its function
beside the feature it belongs to and add an entry to :func:`periodic_tasks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.services import Services


@dataclass(frozen=True)
class PeriodicTask:
    """A job run every ``every_seconds`` by the queue's workers."""

    name: str
    """The taskiq task name, ``sluicegate.<feature>.<job>``."""
    every_seconds: int
    run: Callable[[Services], Awaitable[None]]


def periodic_tasks() -> tuple[PeriodicTask, ...]:
    """Every periodic job of the gateway, in a fixed order."""
    from sluicegate.core.audit.retention import EVERY_SECONDS, retention_job
    from sluicegate.core.evals.deferred import requeue_deferred

    return (
        PeriodicTask(
            "sluicegate.evals.requeue_deferred",
            every_seconds=60,
            run=requeue_deferred,
        ),
        PeriodicTask(
            "sluicegate.audit.retention",
            every_seconds=EVERY_SECONDS,
            run=retention_job,
        ),
    )
