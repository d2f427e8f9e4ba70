"""Tokens a request is charged at admission, before its real usage is known.

The estimate is the prompt's characters divided by four (rounded up) plus the
completion tokens the request allows (``max_completion_tokens`` or
``max_tokens``, times ``n``), or a configured default when it sets none.  The
after step replaces the estimate by the usage the provider reports.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4


def estimate_tokens(
    endpoint: str, body: dict[str, Any], default_completion: int
) -> int:
    """The tokens ``body`` is charged at admission (at least 1)."""
    if endpoint == "embeddings":
        return max(1, _prompt_tokens(body.get("input")))
    prompt = _prompt_tokens(body.get("messages"))
    return max(1, prompt + _completion_tokens(body, default_completion))


def _completion_tokens(body: dict[str, Any], default: int) -> int:
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = body.get("n")
    per_choice = cap if isinstance(cap, int) and cap > 0 else default
    return per_choice * (choices if isinstance(choices, int) and choices > 0 else 1)


def _prompt_tokens(value: Any) -> int:
    chars, tokens = _measure(value)
    return -(-chars // CHARS_PER_TOKEN) + tokens


def _measure(value: Any) -> tuple[int, int]:
    """Characters of text and count of pre-tokenised ids inside ``value``."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, int) and not isinstance(value, bool):
        return 0, 1
    chars = tokens = 0
    if isinstance(value, list):
        parts: Any = value
    elif isinstance(value, dict):
        parts = [value.get("content"), value.get("text")]
    else:
        return 0, 0
    for part in parts:
        more_chars, more_tokens = _measure(part)
        chars += more_chars
        tokens += more_tokens
    return chars, tokens
