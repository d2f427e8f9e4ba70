"""Calling Redis with short timeouts and a breaker for outages.

Every Redis call of a stage goes through :class:`RedisGuard`.  A call that
fails (connection refused, timeout, a Redis error) raises
:class:`~sluicegate.core.errors.InfrastructureError`, which the stage's
``on_failure`` turns into a fail-open admission or a 503.  After
``failure_threshold`` failures in a row the guard stops calling Redis for
``cooldown_seconds`` and fails at once, so an outage costs each request
nothing instead of a timeout; the first call after the cool-down probes Redis
again, and recovery is automatic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sluicegate.core.errors import InfrastructureError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisGuard:
    """A Redis client with a call timeout and a consecutive-failure breaker."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        timeout_seconds: float = 0.25,
        failure_threshold: int = 3,
        cooldown_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0

    @property
    def healthy(self) -> bool:
        """False while the guard is refusing calls after repeated failures."""
        return self.failures < self.failure_threshold

    def key(self, *parts: object) -> str:
        """A key under this deployment's prefix, e.g. ``key("{ws:1}", "rl")``."""
        return ":".join([self.prefix, *map(str, parts)])

    async def call(self, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run ``operation(client)``; InfrastructureError on any Redis failure."""
        if not self.healthy and self.clock() < self.open_until:
            raise InfrastructureError("redis", "skipped: Redis failed repeatedly")
        try:
            result = await asyncio.wait_for(
                operation(self.client), self.timeout_seconds
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise InfrastructureError("redis", f"{type(exc).__name__}: {exc}") from exc
        if self.failures:
            log.info("Redis answers again after %d failures", self.failures)
        self.failures = 0
        return result

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.open_until = self.clock() + self.cooldown_seconds
            log.warning(
                "Redis failed %d times in a row (%s); not calling it for %.1fs",
                self.failures,
                type(exc).__name__,
                self.cooldown_seconds,
            )
