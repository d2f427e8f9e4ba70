"""The request bodies the proxy accepts, validated before anything is sent.

Only the fields the gateway relies on are typed (strictly: ``"stream": "yes"``
is an error, not ``True``); every other field is passed to the provider as
the client sent it, so new OpenAI parameters work without a gateway release.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_OUTPUT_TOKENS = 1_000_000
"""No model writes more; larger values are refused as mistakes."""


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Message(_Passthrough):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class StreamOptions(_Passthrough):
    include_usage: StrictBool = False


class ChatCompletionRequest(_Passthrough):
    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: StrictInt | None = Field(
        default=None, ge=1, le=MAX_OUTPUT_TOKENS
    )
    n: StrictInt | None = Field(default=None, ge=1, le=128)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: StrictStr | None = Field(default=None, max_length=256)


class EmbeddingRequest(_Passthrough):
    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = (
        Field(min_length=1)
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = Field(default=None, max_length=256)


class AnthropicMessage(_Passthrough):
    role: Literal["user", "assistant"]
    content: StrictStr | list[dict[str, Any]]


class MessagesRequest(_Passthrough):
    """Anthropic's ``POST /v1/messages`` body (the fields the gateway reads)."""

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1, le=MAX_OUTPUT_TOKENS)
    system: StrictStr | list[dict[str, Any]] | None = None
    stream: StrictBool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop_sequences: list[StrictStr] | None = None
