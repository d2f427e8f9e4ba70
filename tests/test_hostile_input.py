"""Hostile and broken clients get their documented error and leave nothing
behind: oversized bodies and headers, broken HTTP, unknown fields, attempts to
redirect the provider call, clients that hang up."""

from __future__ import annotations

import socket
import threading

import httpx
import openai
import pytest

from tests.fakes.upstream import Reply
from tests.fixtures.gateway import PUBLIC_MODEL, UPSTREAM_KEY, RunningGateway

MESSAGES = [{"role": "user", "content": "hi"}]
LIMIT = 4 * 1024 * 1024


def read_response(sock: socket.socket) -> bytes:
    """Read one response: the head, then as many body bytes as it declares."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def raw_exchange(gateway: RunningGateway, request: bytes) -> bytes:
    """Send bytes on a fresh connection; return what the server answers."""
    port = gateway.process.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_response(sock)


def test_a_chunked_body_over_the_limit_is_refused_before_it_ends(
    embedded_gateway: RunningGateway,
) -> None:
    port = embedded_gateway.process.port
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {embedded_gateway.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(LIMIT // len(chunk) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The body has not ended (no zero-length chunk), yet the answer comes.
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"request_too_large"' in answer
    assert embedded_gateway.upstream.calls == 0


def test_a_declared_length_over_the_limit_is_refused_without_reading(
    embedded_gateway: RunningGateway,
) -> None:
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {LIMIT + 1}\r\nContent-Type: application/json\r\n\r\n"
    ).encode()
    assert raw_exchange(embedded_gateway, request).startswith(b"HTTP/1.1 413")


def test_a_huge_header_set_gets_431(embedded_gateway: RunningGateway) -> None:
    headers = "".join(f"X-Filler-{i}: {'a' * 100}\r\n" for i in range(400))
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
    answer = raw_exchange(embedded_gateway, request)
    assert answer.startswith(b"HTTP/1.1 431")
    assert b'"headers_too_large"' in answer


def test_a_header_value_with_a_bare_cr_is_refused(
    embedded_gateway: RunningGateway,
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\rInjected: b\r\n\r\n"
    assert raw_exchange(embedded_gateway, request).startswith(b"HTTP/1.1 400")


def test_the_gateway_still_serves_after_hostile_requests(
    embedded_gateway: RunningGateway,
) -> None:
    raw_exchange(embedded_gateway, b"\x00\xff garbage \r\n\r\n")
    raw_exchange(embedded_gateway, b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n")
    assert httpx.get(f"{embedded_gateway.base_url}/healthz").status_code == 200


def test_unknown_fields_are_passed_to_the_provider_untouched(
    embedded_gateway: RunningGateway,
) -> None:
    body = {
        "model": PUBLIC_MODEL,
        "messages": MESSAGES,
        "seed": 7,
        "some_future_option": {"nested": [1, 2]},
    }
    response = httpx.post(
        f"{embedded_gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {embedded_gateway.key}"},
        timeout=30,
    )
    assert response.status_code == 200
    sent = embedded_gateway.upstream.requests[-1].json
    assert sent["some_future_option"] == {"nested": [1, 2]}
    assert sent["seed"] == 7


def test_a_client_cannot_redirect_the_provider_call_or_its_key(
    embedded_gateway: RunningGateway,
) -> None:
    body = {
        "model": PUBLIC_MODEL,
        "messages": MESSAGES,
        "base_url": "http://attacker.invalid/v1",
        "api_base": "http://attacker.invalid/v1",
    }
    headers = {
        "authorization": f"Bearer {embedded_gateway.key}",
        "x-forwarded-host": "attacker.invalid",
        "openai-organization": "org-attacker",
        "x-upstream-url": "http://attacker.invalid/v1",
    }
    response = httpx.post(
        f"{embedded_gateway.base_url}/v1/chat/completions",
        json=body,
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200
    sent = embedded_gateway.upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "attacker" not in str(sent.headers)


def test_a_provider_key_echoed_in_an_upstream_error_never_reaches_the_client(
    embedded_gateway: RunningGateway,
) -> None:
    echo = {"error": {"message": f"bad key {UPSTREAM_KEY} for Bearer {UPSTREAM_KEY}"}}
    embedded_gateway.upstream.script([Reply(status=400, body=echo)])
    with (
        openai.OpenAI(
            base_url=f"{embedded_gateway.base_url}/v1",
            api_key=embedded_gateway.key,
            max_retries=0,
        ) as sdk,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert UPSTREAM_KEY not in str(caught.value.body)
    assert UPSTREAM_KEY not in embedded_gateway.process.log()


def test_a_very_long_stream_is_relayed_whole(embedded_gateway: RunningGateway) -> None:
    words = " ".join(f"w{i}" for i in range(3000))
    embedded_gateway.upstream.script([Reply(content=words)])
    with openai.OpenAI(
        base_url=f"{embedded_gateway.base_url}/v1",
        api_key=embedded_gateway.key,
        max_retries=0,
    ) as sdk:
        stream = sdk.chat.completions.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == words


def test_a_client_hanging_up_mid_stream_closes_the_upstream_call(
    embedded_gateway: RunningGateway,
) -> None:
    release = threading.Event()
    embedded_gateway.upstream.script([Reply(hold=release, hold_after=2)])
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        f"{embedded_gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {embedded_gateway.key}"},
        timeout=30,
    ) as response:
        next(response.iter_lines())
    # The client is gone; the gateway must abandon the upstream stream too.
    assert embedded_gateway.upstream.wait_abandoned(1, timeout=10)
    release.set()
    assert httpx.get(f"{embedded_gateway.base_url}/healthz").status_code == 200
