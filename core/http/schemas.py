"""The request bodies the proxy accepts, validated before anything is sent.

Only the fields the gateway relies on are typed (strictly: ``"stream": "yes"``
is an error, not ``True``); every other field is passed to the provider as
the client sent it, so new OpenAI parameters work without a gateway release.
The fields the translation between the OpenAI and Anthropic shapes reads
(content parts and blocks, tools, tool calls, ``stop``, ``metadata``) are
typed too, so a wrong type there is a 400 naming the field, not a failure
halfway through the pipeline.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

MAX_OUTPUT_TOKENS = 1_000_000
"""No model writes more; larger values are refused as mistakes."""


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ImageUrl(_Passthrough):
    url: StrictStr


class ContentPart(_Passthrough):
    """One part of a message's content: text, an image or another kind."""

    type: StrictStr
    text: StrictStr = ""
    image_url: ImageUrl | None = None


class FunctionCall(_Passthrough):
    name: StrictStr
    arguments: StrictStr | dict[str, Any] | None = None


class ToolCall(_Passthrough):
    id: StrictStr | None = None
    function: FunctionCall | None = None


class Message(_Passthrough):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None


class FunctionDefinition(_Passthrough):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Passthrough):
    function: FunctionDefinition | None = None


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
    stop: StrictStr | list[StrictStr] | None = None
    tools: list[Tool] | None = None


class EmbeddingRequest(_Passthrough):
    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = (
        Field(min_length=1)
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = Field(default=None, max_length=256)


class AnthropicBlock(_Passthrough):
    """One content block of an Anthropic message: text, image, tool use or
    result, or another kind."""

    type: StrictStr
    text: StrictStr = ""
    source: dict[str, Any] | StrictStr | None = None
    id: StrictStr | None = None
    name: StrictStr | None = None
    input: dict[str, Any] | None = None
    tool_use_id: StrictStr | None = None

    @model_validator(mode="after")
    def _image_source_is_an_object(self) -> AnthropicBlock:
        if self.type == "image" and not isinstance(self.source, dict):
            raise ValueError(
                "an image block's source must be an object such as "
                '{"type": "base64", "media_type": "image/png", "data": "..."}'
            )
        return self


class AnthropicMessage(_Passthrough):
    role: Literal["user", "assistant"]
    content: StrictStr | list[AnthropicBlock]


class AnthropicTool(_Passthrough):
    name: StrictStr
    description: StrictStr | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicMetadata(_Passthrough):
    user_id: StrictStr | None = None


class MessagesRequest(_Passthrough):
    """Anthropic's ``POST /v1/messages`` body (the fields the gateway reads)."""

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1, le=MAX_OUTPUT_TOKENS)
    system: StrictStr | list[AnthropicBlock] | None = None
    stream: StrictBool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop_sequences: list[StrictStr] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: AnthropicMetadata | None = None
