"""What a rate limit is: the YAML rule, one request's checks and the verdict.

A :class:`LimitRule` is one entry of a ``rate_limit`` stage's ``limits`` list::

    {scope: api_key, requests: 600, per: minute}
    {scope: workspace, tokens: 200000, per: "10 minutes"}
    {scope: ip, concurrent: 20}

For one request the stage turns every rule into a :class:`Check` (its storage
key, unit, limit, window and weight).  A limiter admits all checks of a request
or none of them and answers a :class:`Verdict` with one :class:`Standing` per
check.  Every limiter (Redis, in-process) implements :class:`Limiter` with the
same semantics, described in :mod:`sluicegate.core.limits.memory_limiter`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scope = Literal["workspace", "api_key", "ip", "model"]
Unit = Literal["requests", "tokens", "concurrent"]

PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_WINDOW_SECONDS = 86400
_PERIOD = re.compile(r"^\s*(?:(\d+)\s*)?(second|minute|hour|day)s?\s*$")
MICROS = 1_000_000


def window_seconds(per: str) -> int:
    """``minute`` -> 60, ``10 seconds`` -> 10; ValueError naming what is allowed."""
    match = _PERIOD.match(per)
    if match is None:
        raise ValueError(
            "per must be second, minute, hour or day, or a count of them such as "
            "'10 seconds' or '5 minutes'"
        )
    count = int(match.group(1) or 1)
    seconds = count * PERIOD_SECONDS[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"per must span 1 second to 1 day; {per!r} spans {seconds}s")
    return seconds


class LimitRule(BaseModel):
    """One declared limit: a scope and exactly one of requests, tokens, concurrent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope
    requests: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    concurrent: int | None = Field(default=None, gt=0)
    per: str | None = Field(
        default=None,
        description="The window of requests and tokens limits: second, minute, "
        "hour, day or e.g. '10 seconds'.",
    )

    @field_validator("per")
    @classmethod
    def _known_period(cls, value: str | None) -> str | None:
        if value is not None:
            window_seconds(value)
        return value

    @model_validator(mode="after")
    def _one_unit(self) -> LimitRule:
        given = [u for u in ("requests", "tokens", "concurrent") if getattr(self, u)]
        if len(given) != 1:
            raise ValueError(
                f"a limit sets exactly one of requests, tokens and concurrent; "
                f"got {given or 'none'}"
            )
        if given[0] == "concurrent" and self.per is not None:
            raise ValueError("a concurrent limit has no 'per': remove it")
        if given[0] != "concurrent" and self.per is None:
            raise ValueError(f"a {given[0]} limit needs 'per', e.g. per: minute")
        return self

    @property
    def unit(self) -> Unit:
        if self.requests is not None:
            return "requests"
        return "tokens" if self.tokens is not None else "concurrent"

    @property
    def limit(self) -> int:
        return self.requests or self.tokens or self.concurrent or 0

    @property
    def window(self) -> int:
        """The window in seconds; 0 for a concurrent limit."""
        return window_seconds(self.per) if self.per is not None else 0


@dataclass(frozen=True, slots=True)
class Check:
    """One limit applied to one request.

    ``key`` names the counter (shared by every request of the same scope
    value); ``window_us`` is the sliding window of a requests or tokens limit,
    or the lease of a concurrency slot; ``weight`` is what this request costs
    (1 request, its estimated tokens, 1 slot).
    """

    key: str
    unit: Unit
    limit: int
    window_us: int
    weight: int
    scope: Scope
    subject: str
    """The scope's value for this request: a workspace name, key, IP or model."""


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one check stands after an admission attempt.

    ``remaining`` counts what is left after this request (if admitted);
    ``reset_us`` is the time until the window is empty again; ``retry_us`` is,
    for a denied windowed check, the time until this request would fit.
    """

    check: Check
    denied: bool
    remaining: int
    reset_us: int
    retry_us: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one admission: all checks admitted, or none."""

    standings: tuple[Standing, ...]

    @property
    def admitted(self) -> bool:
        return not any(standing.denied for standing in self.standings)

    @property
    def denials(self) -> list[Standing]:
        return [standing for standing in self.standings if standing.denied]


class Limiter(Protocol):
    """Admits a request's checks atomically and settles them when it ends."""

    async def admit(self, request_id: str, checks: Sequence[Check]) -> Verdict:
        """Admit every check or none; record the request only when admitted."""
        ...

    async def settle(
        self, request_id: str, checks: Sequence[Check], tokens: int | None
    ) -> None:
        """Release concurrency slots; re-weigh token checks to ``tokens``."""
        ...
