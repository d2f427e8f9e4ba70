"""The ``x-ratelimit-*`` and ``Retry-After`` headers OpenAI clients read.

For each unit (requests, tokens) the headers describe the tightest check of
the request: the one with the fewest remaining, then the smallest limit.
Durations are written the way OpenAI writes them: ``20ms``, ``1.5s``,
``6m0s``, ``1h0m0s``.
"""

from __future__ import annotations

import math

from sluicegate.core.limits.spec import MICROS, Standing, Verdict

HEADER_UNITS = ("requests", "tokens")
CONCURRENT_RETRY_SECONDS = 1
"""Retry-After of a concurrency denial: a slot frees when a request ends."""


def rate_limit_headers(verdict: Verdict) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of an admitted or denied request."""
    headers: dict[str, str] = {}
    for unit in HEADER_UNITS:
        standings = [s for s in verdict.standings if s.check.unit == unit]
        if not standings:
            continue
        tightest = min(standings, key=lambda s: (s.remaining, s.check.limit))
        headers[f"x-ratelimit-limit-{unit}"] = str(tightest.check.limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{unit}"] = duration(tightest.reset_us)
    return headers


def retry_after_seconds(denials: list[Standing]) -> int:
    """Whole seconds (rounded up, at least 1) until every denial has cleared."""
    waits = [
        s.retry_us / MICROS
        if s.check.unit != "concurrent"
        else CONCURRENT_RETRY_SECONDS
        for s in denials
    ]
    return max(1, math.ceil(max(waits, default=0)))


def duration(micros: int) -> str:
    """``micros`` as OpenAI writes a reset time: ``20ms``, ``1.5s``, ``6m0s``."""
    if micros <= 0:
        return "0s"
    if micros < MICROS:
        return f"{math.ceil(micros / 1000)}ms"
    millis = math.ceil(micros / 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
