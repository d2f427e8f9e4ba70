"""Server-sent events the way OpenAI streams them: framing out, splitting in.

An OpenAI stream is a series of events, each one or more ``data:`` lines closed
by a blank line, and it ends with ``data: [DONE]``.  A relay never re-encodes
what an upstream sends: :class:`EventSplitter` only finds event boundaries in
the bytes it is shown, so a relay can watch for ``[DONE]`` and the usage event
while it passes every chunk on untouched.  :func:`encode_event` and
:func:`error_event` build the events the gateway writes itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

DONE = b"[DONE]"
"""The data of the event that ends an OpenAI stream."""

DONE_EVENT = b"data: [DONE]\n\n"

MEDIA_TYPE = "text/event-stream"

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_MAX_PENDING = 1 << 20
"""Bytes an unfinished event may reach before the splitter drops it: no event
an OpenAI-compatible server sends comes near it, and the relay keeps going."""


def encode_event(payload: Any) -> bytes:
    """One ``data:`` event carrying ``payload`` as compact JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, code: str, error_type: str = "api_error") -> bytes:
    """The event that tells a client its stream failed after it had started.

    It has the shape of an OpenAI error body (``{"error": {...}}``), which the
    OpenAI SDKs raise as an API error when they meet it inside a stream.
    """
    error = {"message": message, "type": error_type, "code": code, "param": None}
    return encode_event({"error": error})


class EventSplitter:
    """Cuts a byte stream into SSE events, wherever its chunks happen to end.

    Events are returned without the blank line that ends them.  Lines may end
    in ``\\n``, ``\\r\\n`` or ``\\r``, as the SSE specification allows.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events that ``chunk`` completes, in order."""
        buffer = self._pending + chunk if self._pending else chunk
        events: list[bytes] = []
        start = 0
        for boundary in _BOUNDARY.finditer(buffer):
            events.append(buffer[start : boundary.start()])
            start = boundary.end()

        self._pending = buffer[start:]
        if len(self._pending) > _MAX_PENDING:
            self._pending = b""
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not finished yet (at the end: a missing blank line)."""
        return self._pending


def data_of(event: bytes) -> bytes | None:
    """The data of one event: its ``data:`` lines joined, or None if it has none.

    Comments (lines starting with ``:``) and the other fields (``event:``,
    ``id:``, ``retry:``) are ignored, as an OpenAI client ignores them.
    """
    if event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event:
        return event[6:]

    values = [
        _field_value(line[5:]) for line in event.splitlines() if line[:5] == b"data:"
    ]
    return b"\n".join(values) if values else None


def _field_value(value: bytes) -> bytes:
    return value[1:] if value[:1] == b" " else value


async def aiter_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The data of every event in a byte stream, ``[DONE]`` included."""
    splitter = EventSplitter()
    async for chunk in chunks:
        for event in splitter.feed(chunk):
            data = data_of(event)
            if data is not None:
                yield data
