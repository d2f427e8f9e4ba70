"""An example provider plugin: a text-generation server with its own API.

The server takes ``POST {base_url}/generate`` with ``prompt``,
``max_new_tokens`` and ``temperature`` and answers ``generated_text`` and
``usage``.  Chat messages become one prompt; the answer becomes an OpenAI
``chat.completion`` (or, for a streaming request, SSE chunks of it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from pydantic import Field

from sluicegate.core import hookimpl
from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.errors import ProviderError
from sluicegate.core.provider import Provider, ProviderConfig, UpstreamCall

RETRYABLE = frozenset({429, 500, 502, 503, 504})


class TextgenConfig(ProviderConfig):
    base_url: str = Field(pattern=r"^https?://", description="The server's root.")
    default_max_new_tokens: int = Field(default=512, gt=0)


class TextgenProvider(Provider):
    """Translates OpenAI chat requests to the textgen server and back."""

    kind_name = "textgen"
    Config = TextgenConfig

    def __init__(self, name: str, config: TextgenConfig) -> None:
        super().__init__(name, config)
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            timeout=httpx.Timeout(config.timeout_seconds, connect=5.0),
            trust_env=False,
        )

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        answer = await self._generate(call)
        text = str(answer.get("generated_text", ""))
        usage = _usage(answer)
        if call.stream:
            stream = _as_stream(call, text, usage)
            return UpstreamResponse(
                200,
                call.target,
                stream=stream,
                media_type="text/event-stream",
                usage=usage,
            )
        return UpstreamResponse(
            200, call.target, body=_completion(call, text, usage), usage=usage
        )

    async def _generate(self, call: UpstreamCall) -> dict[str, Any]:
        body = call.body
        payload = {
            "prompt": prompt_of(body.get("messages", [])),
            "max_new_tokens": body.get("max_tokens")
            or body.get("max_completion_tokens")
            or self.config.default_max_new_tokens,
            "temperature": body.get("temperature", 1.0),
        }
        try:
            response = await self.client.post(
                "/generate", json=payload, timeout=call.timeout
            )
        except httpx.TransportError as exc:
            raise ProviderError(
                call.target,
                f"{type(exc).__name__} talking to the textgen server",
                retryable=True,
                timeout=isinstance(exc, httpx.TimeoutException),
            ) from exc
        if response.status_code != 200:
            raise ProviderError(
                call.target,
                f"the textgen server answered {response.status_code}",
                status=response.status_code,
                retryable=response.status_code in RETRYABLE,
            )
        return dict(response.json())

    async def close(self) -> None:
        await self.client.aclose()


def prompt_of(messages: list[dict[str, Any]]) -> str:
    """The chat as one prompt: ``role: content`` lines, then ``assistant:``."""
    lines = [f"{m.get('role')}: {m.get('content') or ''}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _usage(answer: dict[str, Any]) -> Usage:
    usage = answer.get("usage") or {}
    return Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))


def _completion(call: UpstreamCall, text: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


async def _as_stream(
    call: UpstreamCall, text: str, usage: Usage
) -> AsyncIterator[bytes]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
    }
    deltas = [
        {"role": "assistant", "content": ""},
        {"content": text},
    ]
    for delta in deltas:
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        yield _event({**base, "choices": [choice]})
    yield _event(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    if (call.body.get("stream_options") or {}).get("include_usage"):
        totals = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        yield _event({**base, "choices": [], "usage": totals})
    yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@hookimpl
def sluicegate_provider_kinds() -> list[type[Provider]]:
    return [TextgenProvider]
