"""``sluicegate worker``: run evaluation jobs (and periodic jobs) from Redis.

Each worker process takes jobs from the Redis stream the gateways queue to,
up to ``SLUICEGATE_EVAL_WORKER_CONCURRENCY`` at once, and re-queues jobs that
were deferred while the queue was unreachable.  Start as many as the load
needs; SIGTERM or Ctrl-C stops one after its running jobs are cancelled
(a cancelled job is claimed again by another worker after the broker's idle
timeout, since it was never acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from taskiq.api import run_receiver_task

from sluicegate.core.commands.output import EXIT_OK, EXIT_USAGE, report
from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.evals.deferred import requeue_loop
from sluicegate.core.evals.queue import EvalQueue
from sluicegate.core.services import Services, open_services
from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)

NO_REDIS = ConfigError(
    [
        Problem(
            "environment",
            "SLUICEGATE_REDIS_URL",
            "unset",
            "a redis:// URL shared with the gateways; without Redis the gateway "
            "runs evaluations itself and no worker is needed",
        )
    ]
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run evaluation jobs from the Redis queue",
        description="Takes evaluation jobs (and periodic jobs) from the Redis "
        "queue of SLUICEGATE_REDIS_URL and runs them.  Without Redis, the "
        "gateway runs evaluations itself and no worker is needed.",
    )
    parser.set_defaults(handler=handle_worker)


async def handle_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis_url is None:
        return report(NO_REDIS, EXIT_USAGE)
    services = await open_services(settings)
    try:
        queue = await _worker_queue(services)
        services.spawn(
            requeue_loop(services, queue, settings.eval_requeue_seconds),
            forever=True,
        )
        log.info("evaluation worker listening on %s", queue.broker)
        receiver = run_receiver_task(
            queue.broker,
            max_async_tasks=settings.eval_worker_concurrency,
            propagate_exceptions=False,
        )
        await until_stopped(receiver)
    finally:
        await services.close()
    return EXIT_OK


async def _worker_queue(services: Services) -> EvalQueue:
    """Swap the client queue open_services built for a worker's one."""
    client = services.evals
    services.evals = EvalQueue(services, role="worker")
    if client is not None:
        await client.close()
    await services.evals.start()
    return services.evals


async def until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or SIGTERM / SIGINT arrives."""
    task = asyncio.get_running_loop().create_task(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
