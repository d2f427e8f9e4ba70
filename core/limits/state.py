"""The rate limiters of one process, shared by every ``rate_limit`` stage.

Stages are rebuilt when a pipeline file changes; their limiters are not, so
in-flight requests and counted windows survive a reload.  The state lives in
``services.extras`` (owned by the app) and also says how the limiter fares
for ``/readyz``: Redis, in-process, or degraded while Redis is down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from sluicegate.core.limits.memory_limiter import MemoryLimiter
from sluicegate.core.limits.redis_limiter import RedisLimiter
from sluicegate.core.limits.spec import Check

if TYPE_CHECKING:
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

EXTRAS_KEY = "sluicegate.rate_limit"


@dataclass
class LimitsState:
    """Limiters and outage bookkeeping of one process."""

    redis: RedisLimiter | None
    processes: int
    refusals: Counter
    local: MemoryLimiter = field(default_factory=MemoryLimiter)
    """Embedded mode (no Redis) or the fallback while Redis is down."""
    degraded_since: float | None = None
    degraded_mode: str = ""
    fail_open_admissions: int = 0
    fail_closed_refusals: int = 0

    def fallback_checks(self, checks: list[Check]) -> list[Check]:
        """``checks`` with each limit divided among the gateway processes."""
        if self.processes == 1:
            return checks
        return [replace(c, limit=max(1, c.limit // self.processes)) for c in checks]

    def failed(self, stage: str, mode: str) -> None:
        """Redis failed for an admission; ``mode`` is ``open`` or ``closed``."""
        if mode == "closed":
            self.fail_closed_refusals += 1
            self.refusals.labels(stage=stage).inc()
        if self.degraded_since is None:
            self.degraded_since = time.time()
            log.warning(
                "rate limits cannot reach Redis; stage %s fails %s (%s)",
                stage,
                mode,
                "per-process limits: the configured limit divided by "
                f"{self.processes} processes"
                if mode == "open"
                else "503",
            )
        self.degraded_mode = mode

    def recovered(self) -> None:
        if self.degraded_since is not None:
            log.warning(
                "rate limits reach Redis again after %.1fs degraded",
                time.time() - self.degraded_since,
            )
            self.degraded_since = None

    def health(self) -> dict[str, Any]:
        """The ``rate_limit`` check of ``/readyz``."""
        if self.redis is None:
            return {"status": "ok", "mode": "in-process"}
        if self.degraded_since is None:
            return {"status": "ok", "mode": "redis"}
        mode = "per-process" if self.degraded_mode == "open" else "failing closed"
        return {
            "status": "degraded",
            "mode": mode,
            "since": round(self.degraded_since, 3),
            "fail_open_admissions": self.fail_open_admissions,
            "fail_closed_refusals": self.fail_closed_refusals,
        }


def limits_state(services: Services) -> LimitsState:
    """This process's :class:`LimitsState`, created on first use."""
    state = services.extras.get(EXTRAS_KEY)
    if state is None:
        state = services.extras[EXTRAS_KEY] = _new_state(services)
    assert isinstance(state, LimitsState)
    return state


def limits_health(services: Services) -> dict[str, Any]:
    """The ``rate_limit`` check of ``/readyz`` (``off`` without a rate_limit stage)."""
    state = services.extras.get(EXTRAS_KEY)
    if not isinstance(state, LimitsState):
        return {"status": "off", "detail": "no pipeline has a rate_limit stage"}
    return state.health()


def _new_state(services: Services) -> LimitsState:
    refusals = Counter(
        "sluicegate_rate_limit_fail_closed_refusals",
        "Requests refused with 503 because a rate_limit stage could not reach "
        "Redis and fails closed.",
        ["stage"],
        registry=services.metrics.registry,
    )
    redis = RedisLimiter(services.redis) if services.redis is not None else None
    return LimitsState(redis, services.settings.gateway_processes, refusals)
