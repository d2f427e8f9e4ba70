"""Dropping the usage event from a stream whose client did not ask for it.

To charge a stream its real tokens the budget stage asks the provider for the
final usage event (``stream_options.include_usage``) even when the client did
not.  A client that did not ask must not get it: the event has an empty
``choices`` list, which code written against a plain stream does not expect.
:class:`WithoutUsageEvent` relays a stream minus that event.  It re-frames the
stream into whole events, so it is applied only to those streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from sluicegate.providers.sse import EventSplitter, data_of

EVENT_END = b"\n\n"

STRIP_USAGE_EVENT = "strip_usage_event"
"""``ctx.scratch`` key: True when a stage asked the provider for a stream's
usage event the client did not ask for; the proxy's relay then drops it."""


def is_usage_event(event: bytes) -> bool:
    """True for the usage-only event: no choices and a usage object."""
    data = data_of(event)
    if data is None or b'"usage"' not in data:
        return False
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(payload, dict)
        and payload.get("choices") == []
        and isinstance(payload.get("usage"), dict)
    )


class WithoutUsageEvent(AsyncIterator[bytes]):
    """``stream``'s events, each whole, without the usage-only event.

    Closing it is the consumer's job on the wrapped stream; this holds
    nothing of its own.
    """

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._events = EventSplitter()
        self._ended = False

    async def __anext__(self) -> bytes:
        while not self._ended:
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._ended = True
                rest = self._events.pending
                if rest:
                    return rest
                raise
            kept = [
                event + EVENT_END
                for event in self._events.feed(chunk)
                if not is_usage_event(event)
            ]
            if kept:
                return b"".join(kept)
        raise StopAsyncIteration
