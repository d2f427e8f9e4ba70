"""Providers: the upstream LLM APIs a route sends requests to.

A provider kind is a :class:`Provider` subclass with a ``kind_name`` and a
pydantic ``Config`` (its entry under ``providers:`` in the gateway config).
Plugins return provider kinds from the ``sluicegate_provider_kinds`` hook.  The
gateway builds one instance per configured provider at start and closes it at
shutdown; an instance owns its pooled HTTP client.

Providers speak the OpenAI chat shape to the rest of the gateway: a request
body as ``/v1/chat/completions`` takes it, and an answer either as a whole
``chat.completion`` object or as OpenAI SSE bytes (``data: {...}\\n\\n`` ending
with ``data: [DONE]``).  A provider for another API translates both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.core.context import UpstreamResponse
from sluicegate.core.errors import InvalidRequest


class ProviderConfig(BaseModel):
    """Settings every provider entry has; a kind's ``Config`` adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the provider key.",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=600.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=100, gt=0)


@dataclass(frozen=True)
class UpstreamCall:
    """One attempt at one target."""

    target: str
    """``provider/model`` as it appears in logs and the usage ledger."""
    model: str
    """The upstream model name the provider is sent."""
    body: dict[str, Any]
    """The OpenAI-shaped request body, with ``model`` already rewritten."""
    stream: bool
    request_id: str
    timeout: float | None = None
    """Seconds left for this attempt (from the request deadline), if bounded."""


class Provider:
    """Base class of provider kinds."""

    kind_name: ClassVar[str]
    Config: ClassVar[type[ProviderConfig]] = ProviderConfig

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        """Send a chat completion; return a whole body or an open stream.

        Raise :class:`~sluicegate.core.errors.ProviderError` on failure, with
        ``retryable`` set for failures another attempt may cure.
        """
        raise InvalidRequest(f"provider kind {self.kind_name!r} serves no chat")

    async def embeddings(self, call: UpstreamCall) -> UpstreamResponse:
        """Create embeddings; same contract as :meth:`chat` (never a stream)."""
        raise InvalidRequest(
            f"provider kind {self.kind_name!r} serves no embeddings; "
            "route this model to an OpenAI-compatible provider"
        )

    async def close(self) -> None:
        """Close pooled connections."""
