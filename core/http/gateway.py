"""The app-owned state of a serving process: services, pipelines, tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sluicegate.core.pipelines_store import PipelineStore
from sluicegate.core.services import Services, open_services
from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """What the HTTP handlers share within one process."""

    services: Services
    pipelines: PipelineStore
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(cls, settings: Settings) -> Gateway:
        services = await open_services(settings)
        pipelines = PipelineStore(settings.pipelines_dir, services)
        try:
            pipelines.load()
        except BaseException:
            await services.close()
            raise
        gateway = cls(services, pipelines)
        if settings.pipeline_reload_seconds > 0:
            gateway.spawn(pipelines.watch(settings.pipeline_reload_seconds))
        return gateway

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a background task owned by this process until it stops."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pipelines.close()
        await self.services.close()
