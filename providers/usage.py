"""Token usage: read from a provider's answer, or estimated when it sends none.

OpenAI-compatible servers report usage in a ``usage`` object: in the body of a
whole answer, and in the last event of a stream when the request asked for
``stream_options.include_usage``.  Some servers leave it out.  Then the gateway
counts for itself, and the count is an **estimate**: about four characters per
token, rounded up, with no tokenizer.  It is close enough for budgets and rate
limits to hold, never exact enough to reconcile with a provider's invoice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from sluicegate.core.context import Usage

CHARS_PER_TOKEN = 4

_RETAIN_LIMIT = 8 << 20
"""Bytes of stream events kept for counting while no usage has arrived; past
it, each further event counts as one token (OpenAI streams about one per event)."""

_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')


def estimate_tokens(chars: int) -> int:
    """The estimated tokens of ``chars`` characters of text (ceil of chars/4)."""
    return -(-chars // CHARS_PER_TOKEN)


def usage_from_openai(raw: Any) -> Usage | None:
    """The :class:`Usage` of an OpenAI ``usage`` object, or None if it is not one.

    ``cached_tokens`` comes from ``prompt_tokens_details.cached_tokens``; an
    embeddings answer has no ``completion_tokens`` and counts zero.
    """
    if not isinstance(raw, dict):
        return None
    prompt = _count(raw.get("prompt_tokens"))
    if prompt is None:
        return None

    details = raw.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    completion = _count(raw.get("completion_tokens"))
    return Usage(prompt, completion or 0, cached or 0)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def content_chars(content: Any) -> int:
    """Characters of a message content: a string, or a list of text parts."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    return sum(
        len(part["text"])
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Estimated prompt tokens of a chat (``messages``) or embeddings (``input``)
    request body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(
            content_chars(message.get("content"))
            for message in messages
            if isinstance(message, dict)
        )
        return estimate_tokens(chars)
    return count_input_tokens(body.get("input"))


def count_input_tokens(value: Any) -> int:
    """Estimated tokens of an embeddings ``input``: text is estimated, token
    arrays are counted exactly."""
    if isinstance(value, str):
        return estimate_tokens(len(value))
    if not isinstance(value, list):
        return 0
    if all(isinstance(item, int) for item in value):
        return len(value)
    return sum(count_input_tokens(item) for item in value)


def count_completion_tokens(body: Mapping[str, Any]) -> int:
    """Estimated completion tokens of a whole ``chat.completion`` body."""
    chars = 0
    for choice in _list(body.get("choices")):
        chars += _message_chars(choice.get("message"))
    return estimate_tokens(chars)


def count_stream_completion_tokens(payloads: Iterable[bytes]) -> int:
    """Estimated completion tokens of a stream, from its events' data.

    Counts the characters of every ``delta`` (content, refusal and tool-call
    arguments) and divides by four, rounding up: an estimate for a stream that
    ended with no usage event.  Data that is not JSON (``[DONE]``) is skipped.
    """
    chars = 0
    for payload in payloads:
        chunk = _loads(payload)
        for choice in _list(chunk.get("choices")):
            chars += _message_chars(choice.get("delta"))
    return estimate_tokens(chars)


def estimate_usage(request: Mapping[str, Any], answer: Mapping[str, Any]) -> Usage:
    """Estimated usage of a whole answer that came without a ``usage`` object."""
    return Usage(count_prompt_tokens(request), count_completion_tokens(answer))


class StreamUsage:
    """Watches the event data of a relayed stream for the usage it reports.

    Only data that mentions a non-null ``"usage"`` is decoded.  Until usage
    arrives the data is kept, so that :meth:`result` can still estimate the
    completion when the stream ends (or breaks) without a usage event.
    """

    def __init__(self) -> None:
        self.reported: Usage | None = None
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._uncounted_events = 0

    def observe(self, data: bytes) -> Usage | None:
        """Note one event's data; return the usage if this event reports it."""
        if b'"usage"' in data and not _NULL_USAGE.search(data):
            usage = usage_from_openai(_loads(data).get("usage"))
            if usage is not None:
                self.reported = usage
                self._kept.clear()
                return usage

        if self.reported is None:
            self._keep(data)
        return None

    def result(self, request: Mapping[str, Any]) -> Usage:
        """The reported usage, or an estimate from the request and what arrived."""
        if self.reported is not None:
            return self.reported
        completion = count_stream_completion_tokens(self._kept)
        return Usage(count_prompt_tokens(request), completion + self._uncounted_events)

    def _keep(self, data: bytes) -> None:
        if self._kept_bytes + len(data) > _RETAIN_LIMIT:
            self._uncounted_events += 1
            return
        self._kept.append(data)
        self._kept_bytes += len(data)


def _message_chars(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    chars = content_chars(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        chars += len(refusal)
    for call in _list(message.get("tool_calls")):
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            chars += len(function["arguments"])
    return chars


def _list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _loads(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
