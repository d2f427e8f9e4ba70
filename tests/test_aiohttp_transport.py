"""The aiohttp transport under httpx: same requests on the wire, same failures.

Providers handle httpx's exceptions and rely on httpx's decoding, so the
transport must hand them exactly what httpx's own transport would.  Each
failure is made by a raw socket server that misbehaves one way.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import trustme

from sluicegate.core.provider import UpstreamCall
from sluicegate.providers.aiohttp_transport import AiohttpTransport
from sluicegate.providers.openai import OpenAIProvider
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import free_port

KEY = "sk-test-provider-key-0123456789abcdef"
KEY_ENV = "SLUICEGATE_TEST_UPSTREAM_KEY"
BODY = {"model": "upstream-model", "messages": [{"role": "user", "content": "hi"}]}

Handler = Callable[[socket.socket], None]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = AiohttpTransport(max_connections=4)
    async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:
        yield client


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(expected_key=KEY) as up:
        yield up


def chat(client: httpx.AsyncClient, base_url: str) -> httpx.Request:
    return client.build_request(
        "POST",
        f"{base_url}/chat/completions",
        content=orjson.dumps(BODY),
        headers={"authorization": f"Bearer {KEY}", "x-extra": "one"},
    )


async def test_the_upstream_sees_the_same_request_through_either_transport(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(timeout=2.0) as plain:
        first = await plain.send(chat(plain, upstream.base_url))
    second = await client.send(chat(client, upstream.base_url))

    assert first.status_code == second.status_code == 200
    assert first.json()["choices"] == second.json()["choices"]
    by_httpx, by_aiohttp = upstream.requests
    assert by_aiohttp == by_httpx
    assert by_aiohttp.headers["x-extra"] == "one"


async def test_a_provider_keeps_no_cookie_an_upstream_sets(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    upstream.script([Reply(headers={"set-cookie": "session=tenant-a; Path=/"})])
    provider = OpenAIProvider(
        "fake",
        OpenAIProvider.Config(
            kind="openai", base_url=upstream.base_url, api_key_env=KEY_ENV
        ),
    )
    call = UpstreamCall("fake/upstream-model", "upstream-model", BODY, False, "r", 5)
    try:
        for _ in range(2):
            await provider.chat(call)
    finally:
        await provider.close()

    assert [request.headers.get("cookie") for request in upstream.requests] == [
        None,
        None,
    ]


async def test_a_gzip_body_is_decoded_once_by_httpx(
    client: httpx.AsyncClient,
) -> None:
    packed = gzip.compress(b'{"ok": true}')
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-encoding: gzip\r\ncontent-length: {len(packed)}\r\n\r\n"
    )

    def answer(conn: socket.socket) -> None:
        conn.sendall(head.encode() + packed)

    with raw_server(answer) as url:
        response = await client.get(url)

    assert response.json() == {"ok": True}


async def test_closing_a_body_before_its_end_hangs_up_on_the_upstream(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    hold = threading.Event()
    upstream.script([Reply(hold=hold)])
    request = chat(client, upstream.base_url)
    request = client.build_request(
        "POST",
        request.url,
        content=orjson.dumps({**BODY, "stream": True}),
        headers=request.headers,
    )

    response = await client.send(request, stream=True)
    first = await anext(response.aiter_raw())
    await response.aclose()

    assert first.startswith(b"data: ")
    assert await upstream.hung_up(1)
    hold.set()


async def test_an_upstream_certificate_no_root_vouches_for_is_refused(
    client: httpx.AsyncClient,
) -> None:
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_side)

    def handshake(conn: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            server_side.wrap_socket(conn, server_side=True).recv(65536)

    with raw_server(handshake) as url, pytest.raises(httpx.ConnectError) as caught:
        await client.post(url.replace("http://", "https://"), content=b"{}")

    assert "certificate" in str(caught.value).lower()


def reset(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def garble(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")


def stay_silent(conn: socket.socket) -> None:
    while conn.recv(65536):  # until the client hangs up
        pass


def cut_body(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)


Expected = type[Exception] | tuple[type[Exception], ...]
RETRYABLE_DROP = (httpx.ReadError, httpx.RemoteProtocolError)
"""A reset reads as one or the other by when it lands; both are retried."""

FAILURES: dict[str, tuple[Handler | None, Expected]] = {
    "refused": (None, httpx.ConnectError),
    "reset": (reset, RETRYABLE_DROP),
    "garbage": (garble, httpx.RemoteProtocolError),
    "silent": (stay_silent, httpx.ReadTimeout),
    "cut body": (cut_body, httpx.RemoteProtocolError),
}


@pytest.mark.parametrize("failure", FAILURES)
async def test_each_failure_arrives_as_the_httpx_exception_providers_handle(
    client: httpx.AsyncClient, failure: str
) -> None:
    """POST, as providers send: aiohttp would try an idempotent GET again on
    a new connection after a reset, and a one-connection server cannot
    answer that."""
    handler, expected = FAILURES[failure]
    timeout = httpx.Timeout(2.0, read=0.3)

    with pytest.raises(expected):
        if handler is None:
            closed = f"http://127.0.0.1:{free_port()}/"
            await client.post(closed, content=b"{}", timeout=timeout)
        else:
            with raw_server(handler) as url:
                await client.post(url, content=b"{}", timeout=timeout)


class raw_server:
    """A one-connection server on loopback that runs ``handler`` on it."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/"

    def __exit__(self, *exc: Any) -> None:
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            self._handler(conn)
