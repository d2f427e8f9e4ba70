"""The text an evaluator judges, taken from request and response bodies.

Bodies come in the shapes the gateway serves: OpenAI chat completions and
embeddings, and Anthropic messages; a response is a whole JSON answer or the
server-sent events of a stream (as relayed, or as stored by the audit trail).
Only text is taken: images, tool calls and vectors are not judged.
"""

from __future__ import annotations

from typing import Any

import orjson


def prompt_text(body: dict[str, Any]) -> str:
    """The request's text: system prompt and message contents, one per line."""
    parts: list[str] = []
    system = body.get("system")
    if system is not None:
        parts.extend(_content_texts(system))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            parts.extend(_content_texts(message.get("content")))
    parts.extend(_content_texts(body.get("input")))
    parts.extend(_content_texts(body.get("prompt")))
    return "\n".join(part for part in parts if part)


def response_text(raw: bytes | str | None) -> str | None:
    """The answer's text from a JSON body or an SSE stream; None if neither."""
    if raw is None or not raw:
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _stream_text(data)
    return body_text(body) if isinstance(body, dict) else None


def body_text(body: dict[str, Any]) -> str | None:
    """The text of a whole answer (chat completion or Anthropic message)."""
    if body.get("object") == "list":
        return None  # embeddings: vectors, nothing to read
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            parts.extend(_content_texts(message.get("content")))
    if body.get("type") == "message":
        parts.extend(_content_texts(body.get("content")))
    return "".join(parts)


def _stream_text(data: bytes) -> str:
    parts: list[str] = []
    for line in data.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            parts.extend(_event_texts(event))
    return "".join(parts)


def _event_texts(event: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            texts.append(delta["content"])
    delta = event.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("text"), str):
        texts.append(delta["text"])
    return texts


def _content_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return texts
