"""An httpx transport that sends through aiohttp: httpx's interface, less CPU.

httpx stays the client every provider kind talks to (requests, responses,
timeouts, decoding); only the wire underneath changes.  aiohttp's connection
pool and parser cost less per request than httpcore on anyio (README,
Performance, has the numbers that decided it).

What a provider relies on is kept exactly:

- failures arrive as httpx's exceptions: a refused connection is
  :class:`httpx.ConnectError`, a reset or a garbled answer a
  :class:`httpx.NetworkError` or :class:`httpx.RemoteProtocolError`, a read
  that waits too long :class:`httpx.ReadTimeout`;
- a response body that is closed before its end closes its connection, so an
  abandoned stream never returns a half-read connection to the pool;
- nothing is added to or taken from the request: no cookie jar, no proxy from
  the environment, no redirects, no decompression (httpx decodes);
- TLS certificates are verified against certifi's roots, as httpx's own
  transport does, not whatever the host happens to trust.

One difference is aiohttp's own: an idempotent request (GET, HEAD, PUT,
DELETE...) whose connection drops before its answer is sent once more on a
new connection.  Providers send POST, which is never sent again here; the
route stage alone decides on another attempt.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import certifi
import httpx
from yarl import URL

_COMPUTED_HEADERS = frozenset({"content-length", "transfer-encoding"})
"""Framing headers aiohttp writes itself from the body it sends."""

_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
"""Headers aiohttp would add on its own; httpx already chose them."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one pooled :class:`aiohttp.ClientSession`.

    The session is made on the first request, inside the event loop that
    serves it, and closed by :meth:`aclose` (``AsyncClient.aclose`` calls it).
    """

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name not in _COMPUTED_HEADERS
        ]
        with httpx_errors(request):
            response = await self.session().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=client_timeout(request),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=AiohttpBody(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=0,
                    ssl=ssl.create_default_context(cafile=certifi.where()),
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_AUTO_HEADERS,
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp response body, read as it arrives; closing it before its end
    closes the connection instead of pooling it."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request):
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def client_timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts in aiohttp's terms: ``pool`` bounds the
    wait for a pooled connection and connecting, ``read`` each read."""
    timeout = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        connect=timeout.get("pool"),
        sock_connect=timeout.get("connect"),
        sock_read=timeout.get("read"),
    )


@contextmanager
def httpx_errors(request: httpx.Request) -> Iterator[None]:
    """Raise aiohttp's failures as the httpx exceptions providers handle."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc), request=request) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
    ) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc), request=request) from exc
