"""The offline provider: try the gateway with no provider key and no network.

It is not a model.  Every answer says it comes from sluicegate's offline
provider and echoes the caller's last user message, so a newcomer can see a
request go through the whole pipeline (keys, limits, budgets, audit) before
configuring a real provider.  Answers are deterministic: the same request gets
the same text, the same usage and the same embeddings.  Token counts are the
estimates of :mod:`sluicegate.providers.usage` (about four characters a token).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import orjson

from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.errors import ProviderError
from sluicegate.core.provider import Provider, UpstreamCall
from sluicegate.providers.sse import DONE_EVENT, MEDIA_TYPE, encode_event
from sluicegate.providers.usage import (
    content_chars,
    count_input_tokens,
    count_prompt_tokens,
    estimate_tokens,
)

ECHO_CHARS = 200
"""Characters of the last user message an answer echoes."""

WORDS_PER_CHUNK = 3
EMBEDDING_DIMENSIONS = 8
MAX_DIMENSIONS = 4096

_WORD = re.compile(r"\S+\s*")


class OfflineProvider(Provider):
    """Answers chat and embeddings requests locally, without any model."""

    kind_name: ClassVar[str] = "offline"

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        text = answer_text(_messages(call))
        usage = Usage(count_prompt_tokens(call.body), estimate_tokens(len(text)))
        head = _head(call)

        if not call.stream:
            body = completion(head, text, usage)
            return UpstreamResponse(200, call.target, body=body, usage=usage)

        include_usage = _include_usage(call.body)
        events = (
            encode_event(chunk) for chunk in chunks(head, text, usage, include_usage)
        )
        return UpstreamResponse(
            200,
            call.target,
            stream=_relay(events),
            media_type=MEDIA_TYPE,
            usage=usage,
        )

    async def embeddings(self, call: UpstreamCall) -> UpstreamResponse:
        inputs = _inputs(call)
        dimensions = _dimensions(call)
        as_base64 = call.body.get("encoding_format") == "base64"

        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encoded(vector(item, dimensions), as_base64),
            }
            for index, item in enumerate(inputs)
        ]
        tokens = sum(count_input_tokens(item) for item in inputs)
        body = {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return UpstreamResponse(200, call.target, body=body, usage=Usage(tokens, 0))


def answer_text(messages: list[dict[str, Any]]) -> str:
    """The offline answer to a conversation: a notice and an echo of its last
    user message."""
    notice = (
        "This is sluicegate's offline provider, not a real model: "
        "nothing was sent to any LLM."
    )
    last = next(
        (message for message in reversed(messages) if message.get("role") == "user"),
        None,
    )
    if last is None:
        return f"{notice} The request had no user message."

    said = " ".join(_text_of(last.get("content")).split())
    if len(said) > ECHO_CHARS:
        said = said[:ECHO_CHARS] + "…"
    return f'{notice} Your last message was: "{said}"'


def completion(head: dict[str, Any], text: str, usage: Usage) -> dict[str, Any]:
    """A whole ``chat.completion`` body carrying ``text``."""
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return {
        **head,
        "object": "chat.completion",
        "choices": [choice],
        "usage": _usage_body(usage),
    }


def chunks(
    head: dict[str, Any], text: str, usage: Usage, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order:
    the role, the text a few words at a time, the finish, then the usage if
    asked for (with empty ``choices``, as OpenAI sends it)."""
    chunk = {**head, "object": "chat.completion.chunk"}
    if include_usage:
        chunk["usage"] = None

    def with_choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**chunk, "choices": [choice]}

    yield with_choice({"role": "assistant", "content": "", "refusal": None}, None)
    words = _WORD.findall(text)
    for start in range(0, len(words), WORDS_PER_CHUNK):
        piece = "".join(words[start : start + WORDS_PER_CHUNK])
        yield with_choice({"content": piece}, None)
    yield with_choice({}, "stop")
    if include_usage:
        yield {**chunk, "choices": [], "usage": _usage_body(usage)}


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector of ``dimensions`` floats for one input."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(item)
    digest = hashlib.shake_256(b"sluicegate-offline\0" + seed).digest(2 * dimensions)
    raw = [value / 32767.5 - 1.0 for value in struct.unpack(f"<{dimensions}H", digest)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [round(value / norm, 6) for value in raw]


async def _relay(events: Iterator[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event
    yield DONE_EVENT


def _head(call: UpstreamCall) -> dict[str, Any]:
    digest = hashlib.blake2b(call.request_id.encode(), digest_size=12).hexdigest()
    return {
        "id": f"chatcmpl-{digest}",
        "created": int(time.time()),
        "model": call.model,
    }


def _usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content_chars(content):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return "(no text)"


def _encoded(values: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _messages(call: UpstreamCall) -> list[dict[str, Any]]:
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(message, dict) for message in messages
    ):
        raise _invalid(call, "messages", messages, "a list of message objects")
    return messages


def _inputs(call: UpstreamCall) -> list[str | list[int]]:
    value = call.body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(_is_token(item) for item in value):
            return [value]
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, list) and all(map(_is_token, item)) for item in value):
            return list(value)
    raise _invalid(
        call, "input", value, "a string, a list of strings, or token arrays (ints)"
    )


def _dimensions(call: UpstreamCall) -> int:
    value = call.body.get("dimensions", EMBEDDING_DIMENSIONS)
    if _is_token(value) and 1 <= value <= MAX_DIMENSIONS:
        return int(value)
    raise _invalid(call, "dimensions", value, f"an integer from 1 to {MAX_DIMENSIONS}")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(call: UpstreamCall, field: str, got: Any, allowed: str) -> ProviderError:
    shown = repr(got)
    shown = shown[:80] + "…" if len(shown) > 80 else shown
    return ProviderError(
        call.target,
        f"the offline provider needs {field!r} to be {allowed}; got {shown}",
        status=400,
    )
