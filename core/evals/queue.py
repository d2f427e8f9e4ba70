"""The evaluation queue of one process: a taskiq broker built from settings.

With ``SLUICEGATE_REDIS_URL`` set, jobs go to a Redis stream (taskiq-redis's
``RedisStreamBroker``) under the ``SLUICEGATE_REDIS_PREFIX``, and
``sluicegate worker`` processes take them; a job is acknowledged once run, so
a worker that dies mid-job leaves it to be claimed again.  Without Redis, an
in-process broker runs each job as a background task of the process that
queued it.

:class:`EvalQueue` is owned by :class:`~sluicegate.core.services.Services`
(nothing here is module-global).  A *client* queue (the gateway's) uses short
Redis timeouts: :meth:`EvalQueue.enqueue` fails fast with an
:class:`~sluicegate.core.errors.InfrastructureError` when the queue cannot be
reached, and the caller defers the job (:mod:`.deferred`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AsyncBroker, BrokerMessage, InMemoryBroker, SimpleRetryMiddleware
from taskiq_redis import RedisStreamBroker

from sluicegate.core.errors import InfrastructureError, StorageError
from sluicegate.core.evals.jobs import EvalJob, run_job
from sluicegate.core.evals.periodic import PeriodicTask, periodic_tasks

if TYPE_CHECKING:
    from sluicegate.core.services import Services
    from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)

EVALUATE_TASK = "sluicegate.evals.evaluate"
KICK_TIMEOUT_SECONDS = 2.0
CLOSE_TIMEOUT_SECONDS = 10.0
STORAGE_RETRIES = 5

Role = Literal["client", "worker"]


def stream_name(settings: Settings) -> str:
    """The Redis stream holding evaluation jobs."""
    return f"{settings.redis_prefix}:evals"


def group_name(settings: Settings) -> str:
    """The consumer group of the workers reading that stream."""
    return f"{settings.redis_prefix}:eval-workers"


async def waiting_jobs(client: Any, settings: Settings) -> int:
    """Jobs not yet delivered to a worker plus those delivered but not done.

    A stream keeps acknowledged entries, so its length is no backlog; the
    consumer group's ``lag`` and ``pending`` counts are.
    """
    stream = stream_name(settings)
    if not await client.exists(stream):
        return 0
    for group in await client.xinfo_groups(stream):
        if _text(group["name"]) == group_name(settings):
            return int(group.get("lag") or 0) + int(group["pending"])
    return int(await client.xlen(stream))  # no worker has ever read it


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EvalQueue:
    """Queues evaluation jobs; in a worker, also runs them."""

    def __init__(self, services: Services, role: Role = "client") -> None:
        self.services = services
        self.role = role
        self.broker = build_broker(services.settings, role)
        self.evaluate = self.broker.register_task(
            self._evaluator(), task_name=EVALUATE_TASK, retry_on_error=True
        )
        self.periodic = {task.name: task for task in periodic_tasks()}
        for task in self.periodic.values():
            self._register_periodic(task)
        self._started = False
        self._starting = asyncio.Lock()

    @property
    def in_process(self) -> bool:
        return isinstance(self.broker, InMemoryBroker)

    async def enqueue(self, job: EvalJob) -> None:
        """Hand ``job`` to the queue; InfrastructureError if it is unreachable."""
        try:
            async with asyncio.timeout(KICK_TIMEOUT_SECONDS):
                await self.start()
                await self.evaluate.kiq(job.model_dump(mode="json"))
        except (RedisError, OSError, TimeoutError) as exc:
            raise InfrastructureError(
                "evaluation queue",
                f"cannot queue the evaluation of {job.request_id}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc

    async def start(self) -> None:
        """Start the broker once (declares the Redis consumer group)."""
        if self._started:
            return
        async with self._starting:
            if not self._started:
                self.broker.is_worker_process = self.role == "worker"
                await self.broker.startup()
                self._started = True

    async def close(self) -> None:
        """Let in-process jobs finish (bounded), then stop the broker."""
        if isinstance(self.broker, InMemoryBroker):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.broker.wait_all()
        if self._started:
            await self.broker.shutdown()
        elif isinstance(self.broker, InMemoryBroker):
            self.broker.executor.shutdown()
        else:
            await self.broker.connection_pool.disconnect()  # type: ignore[attr-defined]

    def _evaluator(self) -> Callable[[dict[str, Any]], Awaitable[None]]:
        services = self.services

        async def evaluate(job: dict[str, Any]) -> None:
            await run_job(services, EvalJob.model_validate(job))

        return evaluate

    def _register_periodic(self, task: PeriodicTask) -> None:
        async def run() -> None:
            await task.run(self.services)

        self.broker.register_task(
            run,
            task_name=task.name,
            schedule=[{"interval": task.every_seconds}],
        )


class _StreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, kicking through one long-lived client.

    The stock ``kick`` builds a ``Redis`` client (and its table of response
    callbacks) for every job, a cost the profile showed on every request; the
    client here shares the same connection pool and adds the same entry.
    """

    _client: Redis | None = None

    async def kick(self, message: BrokerMessage) -> None:
        if self._client is None:
            self._client = Redis(connection_pool=self.connection_pool)
        queue_name = message.labels.get("queue_name") or self.queue_name
        await self._client.xadd(
            queue_name,
            {b"data": message.message},
            maxlen=self.maxlen,
            approximate=self.approximate,
        )


def build_broker(settings: Settings, role: Role) -> AsyncBroker:
    """A Redis stream broker when Redis is configured, else an in-process one."""
    broker: AsyncBroker
    if settings.redis_url is None:
        broker = InMemoryBroker(max_stored_results=1)
    else:
        connect, read = (0.5, 1.0) if role == "client" else (5.0, 30.0)
        broker = _StreamBroker(
            settings.redis_url,
            queue_name=stream_name(settings),
            consumer_group_name=group_name(settings),
            consumer_id="0",
            xread_block=1000,
            unacknowledged_lock_timeout=30.0,
            socket_connect_timeout=connect,
            socket_timeout=read,
        )
    retries = SimpleRetryMiddleware(
        default_retry_count=STORAGE_RETRIES, types_of_exceptions=[StorageError]
    )
    return broker.with_middlewares(retries)
