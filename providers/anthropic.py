"""Anthropic's Messages API (kind ``anthropic``).

The key goes out in ``x-api-key`` with the configured ``anthropic-version``.
:meth:`AnthropicProvider.chat` serves OpenAI-shaped requests by translating
both ways (:mod:`~sluicegate.providers.anthropic_translate`);
:meth:`AnthropicProvider.messages` serves Anthropic-shaped ones
(``POST /v1/messages``) natively, relaying the answer unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field, field_validator

from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.provider import ProviderConfig, UpstreamCall
from sluicegate.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    MessagesToChatEvents,
    TranslatedStream,
    anthropic_event,
    chat_to_messages_request,
    messages_to_chat_response,
    usage_from_anthropic,
)
from sluicegate.providers.http_base import HttpProvider, checked_base_url, encode_body
from sluicegate.providers.openai import json_object, not_a_stream
from sluicegate.providers.relay import StreamRelay, attempt_deadline
from sluicegate.providers.sse import MEDIA_TYPE
from sluicegate.providers.usage import count_prompt_tokens


class AnthropicWatcher:
    """An Anthropic stream ends with ``message_stop``; usage comes in
    ``message_start`` (input) and ``message_delta`` (output)."""

    end_marker = "event: message_stop"

    def __init__(self) -> None:
        self.finished = False
        self._usage: Usage | None = None

    def observe(self, event: bytes) -> Usage | None:
        name, data = anthropic_event(event)
        if name == "message_stop":
            self.finished = True
        elif name == "message_start":
            message = data.get("message") or {}
            self._usage = usage_from_anthropic(message.get("usage"), self._usage)
        elif name == "message_delta":
            self._usage = usage_from_anthropic(data.get("usage"), self._usage)
            return self._usage
        return None

    def result(self, request: Mapping[str, Any]) -> Usage:
        if self._usage is not None:
            return self._usage
        return Usage(count_prompt_tokens(request), 0)


class AnthropicProvider(HttpProvider):
    """A provider speaking Anthropic's Messages API at ``base_url``."""

    kind_name: ClassVar[str] = "anthropic"

    class Config(ProviderConfig):
        """An ``anthropic`` entry under ``providers:`` in the gateway config."""

        base_url: str = Field(
            default="https://api.anthropic.com",
            description="The bare host, as Anthropic's SDK takes it.",
        )
        anthropic_version: str = Field(
            default="2023-06-01", description="Sent as the anthropic-version header."
        )
        default_max_tokens: int = Field(
            default=DEFAULT_MAX_TOKENS,
            gt=0,
            description="max_tokens for OpenAI-shaped requests that set none.",
        )

        @field_validator("base_url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return checked_base_url(value, "https://api.anthropic.com")

    config: Config

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config, transport=transport)
        self._url = f"{config.base_url}/v1/messages"

    def client_headers(self, key: str | None) -> httpx.Headers:
        headers = super().client_headers(key)
        headers["anthropic-version"] = self.config.anthropic_version
        if key is not None:
            headers["x-api-key"] = key
        return headers

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        """An OpenAI-shaped request, answered in the OpenAI shape."""
        body = chat_to_messages_request(
            call.body, call.model, self.config.default_max_tokens
        )
        response = await self._send_messages(call, body)
        if response.stream is not None:
            options = call.body.get("stream_options") or {}
            events = MessagesToChatEvents(options.get("include_usage") is True)
            response.stream = TranslatedStream(response.stream, events)
        elif response.body is not None:
            response.body = messages_to_chat_response(response.body)
        return response

    async def messages(self, call: UpstreamCall) -> UpstreamResponse:
        """An Anthropic-shaped request, answered natively."""
        return await self._send_messages(call, call.body)

    async def _send_messages(
        self, call: UpstreamCall, body: dict[str, Any]
    ) -> UpstreamResponse:
        deadline = attempt_deadline(call)
        accept = MEDIA_TYPE if call.stream else "application/json"
        request = self.http().build_request(
            "POST",
            self._url,
            content=encode_body(call, body),
            headers={"content-type": "application/json", "accept": accept},
            timeout=self.timeout(call),
        )
        response = await self.send(request, call, deadline, stream=call.stream)
        if not call.stream:
            answer = json_object(call.target, response)
            usage = usage_from_anthropic(answer.get("usage"))
            usage = usage or Usage(count_prompt_tokens(body), 0)
            return UpstreamResponse(200, call.target, body=answer, usage=usage)

        if MEDIA_TYPE not in response.headers.get("content-type", ""):
            raise await not_a_stream(response, call, deadline, (self._key,))
        upstream = UpstreamResponse(200, call.target, media_type=MEDIA_TYPE)
        upstream.stream = StreamRelay(
            response, upstream, call, deadline, AnthropicWatcher()
        )
        return upstream
