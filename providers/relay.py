"""Relaying an upstream SSE response to the client, chunk by chunk, unchanged.

:class:`StreamRelay` passes every chunk on as it arrives and watches the bytes
on the side through a :class:`StreamWatcher`: the watcher knows how the
provider's stream ends cleanly (``data: [DONE]`` for OpenAI, ``message_stop``
for Anthropic) and where it reports usage.  The helpers below bound every
read by the attempt's deadline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, cast

import anyio
import httpx

from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.errors import ProviderError
from sluicegate.core.provider import UpstreamCall
from sluicegate.providers.sse import DONE, EventSplitter, data_of
from sluicegate.providers.usage import StreamUsage

log = logging.getLogger(__name__)


class StreamWatcher(Protocol):
    """What a relay learns from the events of one provider's stream."""

    finished: bool
    """Whether the stream's own clean-end marker has been seen."""

    def observe(self, event: bytes) -> Usage | None:
        """Note one whole event; return usage if this event reports it."""

    def result(self, request: Mapping[str, Any]) -> Usage:
        """The usage to settle with once the stream is over, however it ended."""


class OpenAIWatcher:
    """An OpenAI stream ends with ``data: [DONE]`` and reports usage last."""

    end_marker = "data: [DONE]"

    def __init__(self) -> None:
        self.finished = False
        self._usage = StreamUsage()

    def observe(self, event: bytes) -> Usage | None:
        data = data_of(event)
        if data is None:
            return None
        if data == DONE:
            self.finished = True
            return None
        return self._usage.observe(data)

    def result(self, request: Mapping[str, Any]) -> Usage:
        return self._usage.result(request)


class StreamRelay(AsyncIterator[bytes]):
    """Relays one upstream SSE response, each chunk as it arrives, unchanged.

    Its watcher fills ``upstream.usage`` from the stream's usage events, or
    with an estimate if none came.  A stream that ends without its end
    marker, breaks or runs out of time raises a non-retryable
    :class:`ProviderError` after the chunks that did arrive.  The response is
    closed when the stream ends, fails, or the consumer calls :meth:`aclose`
    (stopping early, or cancelled): call it from the consuming task.  Closing
    twice is harmless.
    """

    def __init__(
        self,
        response: httpx.Response,
        upstream: UpstreamResponse,
        call: UpstreamCall,
        deadline: float,
        watcher: StreamWatcher | None = None,
    ) -> None:
        self._response = response
        self._chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        self._upstream = upstream
        self._call = call
        self._deadline = deadline
        self._watcher: StreamWatcher = watcher or OpenAIWatcher()
        self._events = EventSplitter()
        self._received = 0
        self._closed = False

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        finished = True
        try:
            chunk = await self._read()
            finished = False
        except StopAsyncIteration:
            self._check_finished()
            raise
        except (httpx.HTTPError, httpx.StreamError, TimeoutError) as exc:
            raise self._broken(f"broke ({type(exc).__name__})", exc) from exc
        finally:
            if finished:
                await self.aclose()

        self._watch(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the upstream response and settle the usage; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._upstream.usage is None:
            self._upstream.usage = self._watcher.result(self._call.body)

        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._response.aclose()

    async def _read(self) -> bytes:
        with bounded(self._deadline):
            return await anext(self._chunks)

    def _check_finished(self) -> None:
        pending = self._events.pending.strip()
        if pending and not self._watcher.finished:
            self._watcher.observe(pending)
        if not self._watcher.finished:
            marker = getattr(self._watcher, "end_marker", "its end marker")
            raise self._broken(f"ended without {marker}") from None

    def _watch(self, chunk: bytes) -> None:
        self._received += len(chunk)
        for event in self._events.feed(chunk):
            if (usage := self._watcher.observe(event)) is not None:
                self._upstream.usage = usage

    def _broken(self, what: str, exc: BaseException | None = None) -> ProviderError:
        timeout = isinstance(exc, httpx.TimeoutException | TimeoutError)
        log.debug(
            "%s: stream %s after %d bytes", self._call.target, what, self._received
        )
        return ProviderError(
            self._call.target,
            f"the upstream stream {what} after {self._received} bytes; "
            "the client has a partial answer",
            retryable=False,
            timeout=timeout,
        )


async def read_and_close(response: httpx.Response, deadline: float) -> bytes:
    """The body of a response that will not be relayed (best effort), closed."""
    try:
        with bounded(deadline):
            return await response.aread()
    except (httpx.HTTPError, httpx.StreamError, TimeoutError):
        return b""
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def attempt_deadline(call: UpstreamCall) -> float:
    """The anyio clock time this attempt must end by (inf if unbounded)."""
    if call.timeout is None:
        return math.inf
    if call.timeout <= 0:
        raise ProviderError(
            call.target,
            f"no time is left for this attempt (timeout {call.timeout}s)",
            timeout=True,
        )
    return anyio.current_time() + call.timeout


def bounded(deadline: float) -> AbstractContextManager[Any]:
    """Raise TimeoutError if the block is still running at ``deadline``."""
    return nullcontext() if deadline == math.inf else anyio.fail_at(deadline)
