"""``sluicegate scheduler``: start periodic jobs on their intervals.

With Redis, the scheduler sends each periodic job
(:mod:`sluicegate.core.evals.periodic`) to the queue when it is due and
``sluicegate worker`` processes run it; run one scheduler per deployment.
Without Redis, the scheduler process runs the jobs itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from taskiq import TaskiqScheduler
from taskiq.api import run_scheduler_task
from taskiq.schedule_sources import LabelScheduleSource

from sluicegate.core.commands.output import EXIT_OK
from sluicegate.core.commands.worker import until_stopped
from sluicegate.core.errors import InfrastructureError, StorageError
from sluicegate.core.evals.periodic import PeriodicTask
from sluicegate.core.services import Services, open_services
from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scheduler",
        help="start periodic jobs (run one per deployment)",
        description="Sends periodic jobs to the queue when they are due (with "
        "SLUICEGATE_REDIS_URL), or runs them in this process (without).",
    )
    parser.set_defaults(handler=handle_scheduler)


async def handle_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    services = await open_services(settings)
    try:
        queue = services.evals
        assert queue is not None, "open_services builds the evaluation queue"
        if queue.in_process:
            await until_stopped(_run_locally(services, list(queue.periodic.values())))
        else:
            scheduler = TaskiqScheduler(
                queue.broker, [LabelScheduleSource(queue.broker)]
            )
            await until_stopped(run_scheduler_task(scheduler))
    finally:
        await services.close()
    return EXIT_OK


async def _run_locally(services: Services, tasks: list[PeriodicTask]) -> None:
    async with asyncio.TaskGroup() as group:
        for task in tasks:
            group.create_task(_every(services, task))


async def _every(services: Services, task: PeriodicTask) -> None:
    while True:
        await asyncio.sleep(task.every_seconds)
        try:
            await task.run(services)
        except (StorageError, InfrastructureError) as exc:
            log.warning("periodic job %s failed: %s", task.name, exc)
