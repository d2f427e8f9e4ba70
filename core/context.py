"""What one request carries through its pipeline.

The HTTP layer builds a :class:`RequestContext` after authentication; every
stage reads it and writes its findings into it; after-steps read the final
:class:`Outcome`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of one workspace (or a plugin's equivalent)."""

    workspace_id: int
    workspace: str
    key_id: int | None
    key_prefix: str | None = None
    subject: str | None = None
    """The end user the client names (OpenAI's ``user`` field), if any."""


@dataclass
class Usage:
    """Tokens a provider reports (or the gateway counts) for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Fate(StrEnum):
    """How a request ended."""

    SERVED = "served"
    DENIED = "denied"
    FAILED = "failed"
    TRUNCATED = "truncated"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """The gateway process died before the request ended; its successor
    wrote the record from the start-of-request journal (core/audit/inflight.py)."""


@dataclass
class Outcome:
    """The end of a request as after-steps see it."""

    fate: Fate
    status: int
    error_code: str | None = None
    denied_by: str | None = None
    """The stage (``type`` or ``id``) whose before step denied, if any."""


@dataclass
class UpstreamResponse:
    """What the route stage got from a provider.

    Exactly one of ``body`` (a whole JSON answer) and ``stream`` (SSE bytes to
    relay as they arrive) is set.  ``usage`` is filled in as soon as it is
    known: at once for a body, at the end for a stream.
    """

    status: int
    target: str
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    usage: Usage | None = None


@dataclass
class StageDecision:
    """One stage's verdict, kept for the audit record."""

    stage: str
    decision: str
    detail: str | None = None


@dataclass
class RequestContext:
    """The state of one request through the pipeline."""

    request_id: str
    principal: Principal
    endpoint: str
    """``chat.completions``, ``embeddings`` or ``messages``."""
    body: dict[str, Any]
    raw_body: bytes
    client_ip: str
    headers: dict[str, str]
    model: str
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0
    """Time spent waiting on providers; the rest is the gateway's own."""
    response: UpstreamResponse | None = None
    outcome: Outcome | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers stages add to the client's response (e.g. x-ratelimit-*),
    whether it is served or an error."""
    decisions: list[StageDecision] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)
    """Per-request state a stage keeps between its before and after steps,
    under its own stage id."""

    def decide(self, stage: str, decision: str, detail: str | None = None) -> None:
        """Record a stage's decision for the audit record."""
        self.decisions.append(StageDecision(stage, decision, detail))

    def overhead_ms(self) -> float:
        """Milliseconds the gateway itself has spent so far."""
        elapsed = time.perf_counter() - self.started
        return max(0.0, (elapsed - self.upstream_seconds) * 1000.0)
