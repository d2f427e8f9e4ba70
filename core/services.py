"""Everything a process shares between requests, owned by the app.

:func:`open_services` builds the plugin manager, reads the gateway config,
opens the database (migrating the embedded SQLite default by itself), connects
Redis when configured and starts one provider instance per configured
provider.  :meth:`Services.close` undoes it.  Stages and providers receive the
:class:`Services` they need; nothing here is a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pluggy
import redis.asyncio as aioredis

from sluicegate.core.db.database import Database
from sluicegate.core.evals.queue import EvalQueue
from sluicegate.core.gateway_config import GatewayConfig, load_config
from sluicegate.core.keys import KeyVerifier
from sluicegate.core.metrics import Metrics
from sluicegate.core.plugins import Registry, build_manager, resolve
from sluicegate.core.provider import Provider
from sluicegate.core.redis_guard import RedisGuard
from sluicegate.core.reliability import breakers_for, retry_budget_for
from sluicegate.core.reliability.breaker import Breakers
from sluicegate.core.reliability.retry_budget import RetryBudget
from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The shared parts of one gateway or worker process."""

    settings: Settings
    manager: pluggy.PluginManager
    registry: Registry
    config: GatewayConfig
    database: Database
    keys: KeyVerifier
    metrics: Metrics
    redis: RedisGuard | None = None
    """Redis behind its outage guard; None in the embedded default."""
    providers: dict[str, Provider] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)
    """Room for plugins' shared objects, under the plugin's name."""
    breakers: Breakers = field(default_factory=Breakers)
    """Every target's circuit breaker; per process (core/reliability)."""
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    """Retries every route stage of the process may still make."""
    evals: EvalQueue | None = None
    """The evaluation queue (core/evals/queue.py); built by open_services."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Background tasks the process owns (:meth:`spawn`), ended by close."""
    loops: set[asyncio.Task[None]] = field(default_factory=set)
    """The spawned tasks that run until cancelled (``forever=True``)."""

    def spawn(
        self, coroutine: Coroutine[Any, Any, None], *, forever: bool = False
    ) -> asyncio.Task[None]:
        """Run ``coroutine`` in the background, owned by this process.

        At close, a task that ends by itself gets a few seconds to finish (a
        job being queued); a ``forever`` one (a polling loop) is cancelled.
        """
        task = asyncio.get_running_loop().create_task(coroutine)
        owner = self.loops if forever else self.tasks
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    async def _end_tasks(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
        for task in [*self.loops, *self.tasks]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for result in self.manager.hook.sluicegate_shutdown(services=self):
            await resolve(result)
        await self._end_tasks()
        if self.evals is not None:
            await self.evals.close()
        for provider in self.providers.values():
            await provider.close()
        if self.redis is not None:
            await self.redis.client.aclose()
        await self.database.close()


async def open_services(settings: Settings, *, migrate: bool | None = None) -> Services:
    """Build a process's services; ``migrate`` defaults to True on SQLite."""
    manager, registry = build_manager(settings)
    config = load_config(settings.config_path, registry.provider_kinds)
    database = await Database.connect(settings.database_url)
    if migrate if migrate is not None else settings.uses_sqlite:
        await database.migrate()

    services = Services(
        settings=settings,
        manager=manager,
        registry=registry,
        config=config,
        database=database,
        keys=KeyVerifier(database, cache_seconds=settings.key_cache_seconds),
        metrics=Metrics(),
        redis=_redis(settings),
        providers=_providers(config, registry),
    )
    services.breakers = breakers_for(settings, services.metrics.reliability)
    services.retry_budget = retry_budget_for(settings)
    services.evals = EvalQueue(services)
    for result in manager.hook.sluicegate_startup(services=services):
        await resolve(result)
    return services


def _redis(settings: Settings) -> RedisGuard | None:
    if settings.redis_url is None:
        return None
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=10,
    )
    return RedisGuard(
        client, settings.redis_prefix, timeout_seconds=settings.redis_timeout_seconds
    )


def _providers(config: GatewayConfig, registry: Registry) -> dict[str, Provider]:
    return {
        name: registry.provider_kinds[provider_config.kind](name, provider_config)
        for name, provider_config in config.providers.items()
    }
