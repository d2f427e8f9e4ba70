"""The most tokens a request can use, estimated before it is sent.

The prompt is estimated without a tokenizer, and on the high side: a BPE token
of the providers' tokenizers covers at most a few ASCII characters and often
a single non-ASCII one, so an ASCII character counts a third of a token and
any other character a whole one.  Each message adds a few tokens of framing,
tool definitions count as their JSON, and each image part counts a fixed
number of tokens (``image_tokens``).  The output is bounded by the request's
cap (``max_completion_tokens`` or ``max_tokens``, times ``n``); a request with
no cap gets one (:func:`ensure_output_cap`), so the bound holds upstream too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MESSAGE_FRAMING_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
ASCII_CHARS_PER_TOKEN = 3
DEFAULT_IMAGE_TOKENS = 2_000
CAP_FIELDS = ("max_completion_tokens", "max_tokens")


@dataclass(frozen=True)
class Estimate:
    """The most a request is expected to use: prompt and completion tokens."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def text_tokens(text: str) -> int:
    """A high estimate of the tokens of ``text``."""
    ascii_chars = sum(1 for char in text if char.isascii())
    others = len(text) - ascii_chars
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + others


def estimate(
    endpoint: str, body: Mapping[str, Any], image_tokens: int = DEFAULT_IMAGE_TOKENS
) -> Estimate:
    """The estimate of a chat or embeddings request body (cap already set)."""
    if endpoint == "embeddings":
        return Estimate(input_tokens(body.get("input")), 0)
    prompt = REPLY_PRIMING_TOKENS
    for message in _dicts(body.get("messages")):
        prompt += message_tokens(message, image_tokens)
    for field in ("tools", "functions", "response_format"):
        if body.get(field) is not None:
            prompt += text_tokens(orjson.dumps(body[field]).decode())
    return Estimate(prompt, output_cap(body) or 0)


def message_tokens(message: Mapping[str, Any], image_tokens: int) -> int:
    """Tokens of one chat message: framing, content parts and tool calls."""
    tokens = MESSAGE_FRAMING_TOKENS
    for field in ("role", "name", "tool_call_id"):
        if isinstance(message.get(field), str):
            tokens += text_tokens(message[field])
    tokens += content_tokens(message.get("content"), image_tokens)
    if message.get("tool_calls") is not None:
        tokens += text_tokens(orjson.dumps(message["tool_calls"]).decode())
    return tokens


def content_tokens(content: Any, image_tokens: int) -> int:
    """Tokens of a message content: a string or a list of parts."""
    if isinstance(content, str):
        return text_tokens(content)
    tokens = 0
    for part in _dicts(content):
        if isinstance(part.get("text"), str):
            tokens += text_tokens(part["text"])
        elif part.get("type") in ("image_url", "image"):
            tokens += image_tokens
        else:
            tokens += text_tokens(orjson.dumps(part).decode())
    return tokens


def input_tokens(value: Any) -> int:
    """Tokens of an embeddings ``input``: token arrays exactly, text estimated."""
    if isinstance(value, str):
        return text_tokens(value)
    if not isinstance(value, list):
        return 0
    if all(isinstance(item, int) for item in value):
        return len(value)
    return sum(input_tokens(item) for item in value)


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The most completion tokens the body allows (times ``n``), if it caps them."""
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1
    for field in CAP_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value * choices
    return None


def ensure_output_cap(body: dict[str, Any], default: int, field: str) -> bool:
    """Give ``body`` the cap ``default`` under ``field`` if it has none.

    True when the cap was added (the client sent no cap of its own).
    """
    if any(body.get(name) is not None for name in CAP_FIELDS):
        return False
    body[field] = default
    return True


def _dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]
