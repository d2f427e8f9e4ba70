"""Keeping requests alive while providers stutter: breakers and retry budgets.

:func:`breakers_for` and :func:`retry_budget_for` build the per-process
instances ``Services`` keeps, from the ``SLUICEGATE_BREAKER_*`` and
``SLUICEGATE_RETRY_BUDGET_*`` settings.
"""

from __future__ import annotations

from sluicegate.core.reliability.breaker import Breakers, Policy
from sluicegate.core.reliability.metrics import ReliabilityMetrics
from sluicegate.core.reliability.retry_budget import RetryBudget
from sluicegate.core.settings import Settings


def breakers_for(settings: Settings, metrics: ReliabilityMetrics) -> Breakers:
    policy = Policy(
        window_seconds=settings.breaker_window_seconds,
        minimum_calls=settings.breaker_minimum_calls,
        failure_rate=settings.breaker_failure_rate,
        slow_call_seconds=settings.breaker_slow_call_seconds,
        slow_call_rate=settings.breaker_slow_call_rate,
        cooldown_seconds=settings.breaker_cooldown_seconds,
        half_open_probes=settings.breaker_half_open_probes,
    )
    return Breakers(policy, on_transition=metrics.transition)


def retry_budget_for(settings: Settings) -> RetryBudget:
    return RetryBudget(
        ratio=settings.retry_budget_ratio,
        minimum_per_second=settings.retry_budget_minimum_per_second,
    )
