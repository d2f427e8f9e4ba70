"""Waiting for a stream's first chunk before the client is answered.

The route stage reads the first chunk of a stream itself: until then the
client has received nothing, so a stream that breaks or stalls before its
first byte can still be retried or failed over, and the time to that first
chunk is what a breaker judges a slow call by.  :class:`Primed` then hands
the chunk on, ahead of the rest, without copying anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from sluicegate.core.errors import ProviderError


class Primed(AsyncIterator[bytes]):
    """A stream whose first chunk was already read."""

    def __init__(self, first: bytes | None, rest: AsyncIterator[bytes]) -> None:
        self._first = first
        self._rest = rest

    async def __anext__(self) -> bytes:
        first, self._first = self._first, None
        if first is not None:
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        await close_stream(self._rest)


async def prime(target: str, stream: AsyncIterator[bytes]) -> Primed:
    """Read ``stream``'s first chunk; a failure before it is retryable.

    The stream is closed if reading fails or the caller is cancelled.
    """
    try:
        first: bytes | None = await anext(stream)
    except StopAsyncIteration:
        first = None
    except ProviderError as exc:
        await close_stream(stream)
        raise ProviderError(
            target,
            f"the stream failed before its first byte: {exc}",
            status=exc.status,
            retryable=True,
            timeout=exc.timeout,
        ) from exc
    except BaseException:
        await close_stream(stream)
        raise
    return Primed(first, stream)


async def close_stream(stream: AsyncIterator[bytes]) -> None:
    """Call the stream's ``aclose`` if it has one, even from a cancelled task."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()
