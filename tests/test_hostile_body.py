"""Hostile request bodies, keys and slow clients on both proxy routes.

``POST /v1/chat/completions`` answers errors in OpenAI's shape and
``POST /v1/messages`` in Anthropic's.  A body that is not JSON, not an object,
or has a wrong type, an absurd number or an unknown model gets its documented
status and code before anything runs: the provider is never called, no rate
limit, concurrency slot, budget hold, usage row or audit record is left
behind.  Fields the gateway does not read go to the provider as sent.  A
client that reads a stream slowly holds back only its own request, which
still ends with one audit record.

One gateway serves the whole module (audit, auth, rate_limit, budget and
route on Redis and SQLite).  It routes ``test-model`` to an OpenAI-compatible
target and ``claude`` to an Anthropic one, and each hostile body asks for
the model whose route translates it: a field the translation reads and the
schema let through would fail there.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from sluicegate.core.db.database import Database
from tests.fakes.upstream import DEFAULT_CONTENT, FakeUpstream
from tests.fixtures.databases import run_async
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    UPSTREAM_KEY,
    GatewayProcess,
    gateway_config,
    provision,
)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
BODY_LIMIT = 64 * 1024
REQUESTS_PER_HOUR = 10_000
SETTLE_SECONDS = 10.0
HI = [{"role": "user", "content": "hi"}]
BASE: dict[str, dict[str, Any]] = {
    # Each route asks for the model its body is translated for.
    CHAT: {"model": "claude", "messages": HI},
    MESSAGES: {"model": PUBLIC_MODEL, "max_tokens": 5, "messages": HI},
}
pytestmark = pytest.mark.redis

ANTHROPIC_TYPES = {400: "invalid_request_error", 403: "permission_error"}
ANTHROPIC_TYPES |= {404: "not_found_error"}
ANTHROPIC_TYPES |= {413: "request_too_large", 431: "invalid_request_error"}


class Gateway:
    """The module's gateway, its upstream, its API key and its stores."""

    def __init__(
        self, process: GatewayProcess, upstream: FakeUpstream, key: str, prefix: str
    ) -> None:
        self.process = process
        self.upstream = upstream
        self.key = key
        self.prefix = prefix

    def post(self, route: str, content: bytes, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.process.base_url}{route}",
            content=content,
            headers={
                "authorization": f"Bearer {self.key}",
                "content-type": "application/json",
                **headers,
            },
            timeout=30,
        )

    def redis_state(self) -> dict[str, Any]:
        """Every Redis key of the gateway with its value."""
        client = redis.Redis.from_url(self.process.env["SLUICEGATE_REDIS_URL"])
        try:
            return {
                key: _value(client, key)
                for key in client.scan_iter(match=f"{self.prefix}:*")
            }
        finally:
            client.close()

    def settled_redis_state(self) -> dict[str, Any]:
        """The Redis state once no request holds a budget or a slot."""
        deadline = time.monotonic() + SETTLE_SECONDS
        state = self.redis_state()
        while _in_flight(state) and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.redis_state()
        return state

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            database = await Database.connect(self.process.database_url)
            try:
                return await database.fetch(sql, *args)
            finally:
                await database.close()

        return run_async(read)

    def stored_state(self) -> tuple[int, int, int]:
        """Audit records, usage rows and audit payloads."""
        [row] = self.rows(
            "SELECT (SELECT count(*) FROM audit_record) AS records, "
            "(SELECT count(*) FROM usage) AS usage, "
            "(SELECT count(*) FROM audit_payload) AS payloads"
        )
        return int(row["records"]), int(row["usage"]), int(row["payloads"])


def _in_flight(state: dict[str, Any]) -> bool:
    """True while a budget reservation or a concurrency slot is held."""
    return any(
        (isinstance(value, dict) and value.get(b"reserved", b"0") != b"0")
        or (b"concurrent" in key and value)
        for key, value in state.items()
    )


def _value(client: redis.Redis, key: bytes) -> Any:
    kind = client.type(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == b"hash":
        return client.hgetall(key)
    return client.dump(key)


def module_pipeline() -> dict[str, Any]:
    return {
        "stages": [
            {"type": "audit", "payloads": "store"},
            {"type": "auth"},
            {
                "type": "rate_limit",
                "limits": [
                    {
                        "scope": "workspace",
                        "requests": REQUESTS_PER_HOUR,
                        "per": "hour",
                    },
                    {"scope": "api_key", "concurrent": 4},
                ],
            },
            {
                "type": "budget",
                "limits": [{"scope": "workspace", "tokens": 10**9, "per": "day"}],
            },
            {"type": "route", "retries": 0},
        ]
    }


def module_config(upstream: FakeUpstream) -> dict[str, Any]:
    """The test models, plus ``claude`` on an Anthropic target."""
    config = gateway_config(upstream)
    config["providers"]["claude"] = {
        "kind": "anthropic",
        "base_url": f"http://127.0.0.1:{upstream.port}",
        "api_key_env": "SLUICEGATE_TEST_UPSTREAM_KEY",
    }
    config["models"]["claude"] = {
        "targets": [{"provider": "claude", "model": "claude-up"}]
    }
    return config


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("hostile-body")
    database_url = f"sqlite:///{workdir / 'gateway.db'}"
    key = provision(database_url, ["acme"])["acme"]
    prefix = f"sgtest-{secrets.token_hex(6)}"
    env = {
        "SLUICEGATE_REDIS_URL": redis_url,
        "SLUICEGATE_REDIS_PREFIX": prefix,
        "SLUICEGATE_REDIS_TIMEOUT_SECONDS": "2",
        "SLUICEGATE_MAX_BODY_BYTES": str(BODY_LIMIT),
    }
    with FakeUpstream(expected_key=UPSTREAM_KEY) as upstream:
        config = module_config(upstream)
        process = GatewayProcess(
            workdir, database_url, config, {"default": module_pipeline()}, env=env
        )
        with process:
            yield Gateway(process, upstream, key, prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        for stale in client.scan_iter(match=f"{prefix}:*"):
            client.delete(stale)
    finally:
        client.close()


def dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def error_of(route: str, response: httpx.Response) -> tuple[str, str, str | None]:
    """The error's code, message and param, checked against the route's shape."""
    body = response.json()
    if route == CHAT:
        error = body["error"]
        assert set(error) == {"message", "type", "code", "param"}
        return error["code"], error["message"], error["param"]
    assert body["type"] == "error"
    assert body["error"]["type"] == ANTHROPIC_TYPES[response.status_code]
    code, _, message = body["error"]["message"].partition(": ")
    return code, message, None


# -- bodies that are not a JSON object -------------------------------------------


def _with_content(route: str, raw_content: bytes) -> bytes:
    return dumps(BASE[route]).replace(b'"content":"hi"', b'"content":' + raw_content)


NOT_AN_OBJECT: dict[str, Any] = {
    "malformed": lambda route: b"{model: claude,,}",
    "truncated": lambda route: dumps(BASE[route])[:-9],
    "empty": lambda route: b"",
    "an array": lambda route: b"[1, 2]",
    "a string": lambda route: b'"hello"',
    "null": lambda route: b"null",
    "a number": lambda route: b"42",
    "a byte order mark": lambda route: b"\xef\xbb\xbf" + dumps(BASE[route]),
    "invalid utf-8": lambda route: _with_content(route, b'"\xff\xfe"'),
    "a lone surrogate": lambda route: _with_content(route, b'"\\ud800"'),
    "nesting 5000 deep": lambda route: b'{"model":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "an infinite number": lambda route: dumps(BASE[route])[:-1] + b',"top_p":1e999}',
}


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
@pytest.mark.parametrize("case", sorted(NOT_AN_OBJECT))
def test_a_body_that_is_not_a_json_object_gets_400_and_reaches_no_provider(
    gateway: Gateway, route: str, case: str
) -> None:
    calls = gateway.upstream.calls
    response = gateway.post(route, NOT_AN_OBJECT[case](route))

    code, message, _ = error_of(route, response)
    assert (response.status_code, code) == (400, "invalid_request")
    assert "JSON" in message
    assert gateway.upstream.calls == calls


# -- wrong types and absurd values ---------------------------------------------------


def _fields(**fields: Any) -> Any:
    return lambda base: {**base, **fields}


def _message(message: dict[str, Any]) -> Any:
    return lambda base: {**base, "messages": [message]}


def _without(field: str) -> Any:
    return lambda base: {k: v for k, v in base.items() if k != field}


WRONG_TYPES: list[tuple[str, str, Any, str]] = [
    # (route, case id, change to the valid body, the field the error names)
    (CHAT, "messages a string", _fields(messages="hi"), "messages"),
    (CHAT, "model a number", _fields(model=7), "model"),
    (CHAT, "stream yes", _fields(stream="yes"), "stream"),
    (CHAT, "max_tokens 10**12", _fields(max_tokens=10**12), "max_tokens"),
    (CHAT, "max_tokens -1", _fields(max_tokens=-1), "max_tokens"),
    (CHAT, "max_tokens many", _fields(max_tokens="many"), "max_tokens"),
    (CHAT, "max_tokens 1.5", _fields(max_tokens=1.5), "max_tokens"),
    (CHAT, "max_tokens true", _fields(max_tokens=True), "max_tokens"),
    (
        CHAT,
        "max_completion_tokens 0",
        _fields(max_completion_tokens=0),
        "max_completion_tokens",
    ),
    (CHAT, "temperature -1", _fields(temperature=-1), "temperature"),
    (CHAT, "temperature hot", _fields(temperature="hot"), "temperature"),
    (CHAT, "temperature true", _fields(temperature=True), "temperature"),
    (CHAT, "top_p 2", _fields(top_p=2), "top_p"),
    (CHAT, "n 0", _fields(n=0), "n"),
    (CHAT, "user a number", _fields(user=5), "user"),
    (CHAT, "stop a number", _fields(stop=5), "stop"),
    (CHAT, "tools a number", _fields(tools=5), "tools"),
    (CHAT, "tool function a number", _fields(tools=[{"function": 5}]), "tools.0"),
    (
        CHAT,
        "image_url a string",
        _message(
            {"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}
        ),
        "messages.0.content",
    ),
    (
        CHAT,
        "tool_calls a string",
        _message({"role": "assistant", "content": "", "tool_calls": "x"}),
        "messages.0.tool_calls",
    ),
    (MESSAGES, "messages a string", _fields(messages="hi"), "messages"),
    (MESSAGES, "model a number", _fields(model=7), "model"),
    (MESSAGES, "stream yes", _fields(stream="yes"), "stream"),
    (MESSAGES, "max_tokens missing", _without("max_tokens"), "max_tokens"),
    (MESSAGES, "max_tokens 10**12", _fields(max_tokens=10**12), "max_tokens"),
    (MESSAGES, "max_tokens -1", _fields(max_tokens=-1), "max_tokens"),
    (MESSAGES, "max_tokens many", _fields(max_tokens="many"), "max_tokens"),
    (MESSAGES, "max_tokens 1.5", _fields(max_tokens=1.5), "max_tokens"),
    (MESSAGES, "max_tokens true", _fields(max_tokens=True), "max_tokens"),
    (MESSAGES, "temperature 1.5", _fields(temperature=1.5), "temperature"),
    (MESSAGES, "system a number", _fields(system=5), "system"),
    (MESSAGES, "tools a string", _fields(tools="x"), "tools"),
    (MESSAGES, "metadata a number", _fields(metadata=5), "metadata"),
    (MESSAGES, "tool_choice a string", _fields(tool_choice="auto"), "tool_choice"),
    (
        MESSAGES,
        "text block a number",
        _message({"role": "assistant", "content": [{"type": "text", "text": 5}]}),
        "messages.0.content",
    ),
    (
        MESSAGES,
        "image source a string",
        _message({"role": "user", "content": [{"type": "image", "source": "x"}]}),
        "messages.0.content",
    ),
]


@pytest.mark.parametrize(
    ("route", "change", "field"),
    [pytest.param(r, c, f, id=f"{r}-{i}") for r, i, c, f in WRONG_TYPES],
)
def test_a_wrong_type_or_absurd_value_gets_400_naming_the_field(
    gateway: Gateway, route: str, change: Any, field: str
) -> None:
    calls = gateway.upstream.calls
    response = gateway.post(route, dumps(change(BASE[route])))

    code, message, param = error_of(route, response)
    assert (response.status_code, code) == (400, "invalid_request")
    assert f"{field}" in message
    assert param is None or param.startswith(field)
    assert gateway.upstream.calls == calls


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_an_unknown_model_gets_404_model_not_found(
    gateway: Gateway, route: str
) -> None:
    calls = gateway.upstream.calls
    response = gateway.post(route, dumps({**BASE[route], "model": "gpt-9"}))

    code, message, _ = error_of(route, response)
    assert (response.status_code, code) == (404, "model_not_found")
    assert "'gpt-9'" in message
    assert gateway.upstream.calls == calls


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_body_over_the_limit_gets_413_in_the_route_s_shape(
    gateway: Gateway, route: str
) -> None:
    padded = {**BASE[route], "padding": "x" * BODY_LIMIT}
    response = gateway.post(route, dumps(padded))

    code, _, _ = error_of(route, response)
    assert (response.status_code, code) == (413, "request_too_large")


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_huge_header_set_gets_431_in_the_route_s_shape(
    gateway: Gateway, route: str
) -> None:
    filler = {f"x-filler-{i}": "a" * 100 for i in range(400)}
    response = gateway.post(route, dumps(BASE[route]), **filler)

    code, _, _ = error_of(route, response)
    assert (response.status_code, code) == (431, "headers_too_large")


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_an_api_key_of_invalid_utf_8_bytes_gets_401(
    gateway: Gateway, route: str
) -> None:
    body = dumps(BASE[route])
    head = (
        f"POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    key = b"Authorization: Bearer sg-\xff\xfe\x80\xc3-secret\r\n"
    with socket.create_connection(("127.0.0.1", gateway.process.port)) as sock:
        sock.settimeout(30)
        sock.sendall(head + key + b"\r\n" + body)
        answer = read_to_the_end(sock, b"")

    assert answer.startswith(b"HTTP/1.1 401")
    assert b"invalid_api_key" in answer


@pytest.fixture(scope="module")
def behind_a_proxy(
    tmp_path_factory: pytest.TempPathFactory, gateway: Gateway
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway that trusts its loopback reverse proxy and allows requests
    from that proxy's own address only."""
    workdir = tmp_path_factory.mktemp("behind-a-proxy")
    database_url = f"sqlite:///{workdir / 'gateway.db'}"
    key = provision(database_url, ["acme"])["acme"]
    pipeline = {
        "stages": [
            {"type": "auth", "ip_allow": ["127.0.0.1/32"]},
            {"type": "route", "retries": 0},
        ]
    }
    env = {"SLUICEGATE_TRUSTED_PROXIES": "127.0.0.1/32"}
    config = module_config(gateway.upstream)
    with GatewayProcess(
        workdir, database_url, config, {"default": pipeline}, env=env
    ) as process:
        yield process, key


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_an_ip_allow_list_judges_the_forwarded_client_on_both_routes(
    behind_a_proxy: tuple[GatewayProcess, str], route: str
) -> None:
    process, key = behind_a_proxy
    response = httpx.post(
        f"{process.base_url}{route}",
        content=dumps(BASE[route]),
        headers={
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            "x-forwarded-for": "203.0.113.9",
        },
        timeout=30,
    )

    code, message, _ = error_of(route, response)
    assert (response.status_code, code) == (403, "ip_not_allowed")
    assert "203.0.113.9" in message


# -- values the gateway does not read ----------------------------------------------

NOT_READ = {
    "presence_penalty": "lots",
    "frequency_penalty": -99,
    "logit_bias": "not a map",
    "top_k": -3,
    "some_future_option": {"nested": [1, 2.5, None]},
}


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_values_the_gateway_does_not_read_reach_the_provider_as_sent(
    gateway: Gateway, route: str
) -> None:
    # Both routes to the target of their own shape, so nothing is translated.
    model = PUBLIC_MODEL if route == CHAT else "claude"
    response = gateway.post(route, dumps({**BASE[route], "model": model, **NOT_READ}))

    sent = gateway.upstream.requests[-1].json
    assert response.status_code == 200
    assert {name: sent[name] for name in NOT_READ} == NOT_READ


# -- no state left behind ---------------------------------------------------------


def hostile_requests() -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """Every refused request of this module, plus an unknown key."""
    for route in (CHAT, MESSAGES):
        for make in NOT_AN_OBJECT.values():
            yield route, make(route), {}
        yield route, dumps({**BASE[route], "model": "gpt-9"}), {}
        yield route, dumps({**BASE[route], "padding": "x" * BODY_LIMIT}), {}
        yield route, dumps(BASE[route]), {"authorization": "Bearer sg-nope0000-x"}
    for route, _, change, _ in WRONG_TYPES:
        yield route, dumps(change(BASE[route])), {}


def test_refused_requests_leave_no_limit_hold_usage_or_record_behind(
    gateway: Gateway,
) -> None:
    valid = dumps({"model": PUBLIC_MODEL, "messages": HI})
    before = gateway.post(CHAT, valid)
    assert wait_for_record(gateway, before.headers["x-request-id"])
    redis_before = gateway.settled_redis_state()
    stored_before = gateway.stored_state()
    calls = gateway.upstream.calls

    statuses = {
        gateway.post(route, body, **headers).status_code
        for route, body, headers in hostile_requests()
    }

    assert statuses == {400, 401, 404, 413}
    assert gateway.upstream.calls == calls
    assert gateway.redis_state() == redis_before
    assert gateway.stored_state() == stored_before
    assert "unexpected error" not in gateway.process.log()
    after = gateway.post(CHAT, valid)
    assert int(after.headers["x-ratelimit-remaining-requests"]) == (
        int(before.headers["x-ratelimit-remaining-requests"]) - 1
    )


# -- a client that reads slowly -------------------------------------------------------

SLOW_WORDS = 3_000
WORD = "w" * 2_000
"""3,000 events of about 2 KB: 6 MB, more than the socket buffers between a
tiny receive window and the gateway hold (Linux lets a loopback send buffer
grow to 4 MB; 2 MB streams were seen to fit in them)."""
PAUSE_SECONDS = 2.0
STALL_DEADLINE_SECONDS = 20.0


def open_slow_stream(gateway: Gateway) -> tuple[socket.socket, bytes]:
    """Start a stream on a socket with a tiny receive buffer; its head."""
    body = dumps({"model": PUBLIC_MODEL, "messages": HI, "stream": True})
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", gateway.process.port))
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(256)
    return sock, data


def read_to_the_end(sock: socket.socket, start: bytes) -> bytes:
    """Read what is left, with a larger window (a tiny one is very slow)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    data = bytearray(start)
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    payload = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return payload
        payload += rest[:size]
        body = rest[size + 2 :]


def header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    raise AssertionError(f"no {name!r} header in {head!r}")


def test_a_slow_reader_holds_back_only_its_own_stream_which_is_audited_once(
    gateway: Gateway,
) -> None:
    gateway.upstream.content = " ".join([WORD] * SLOW_WORDS)
    try:
        sock, start = open_slow_stream(gateway)
        with sock:
            head, _, rest = start.partition(b"\r\n\r\n")
            request_id = header(head, b"x-request-id")
            others = []
            deadline = time.monotonic() + PAUSE_SECONDS
            while time.monotonic() < deadline:
                others.append(gateway.post(CHAT, dumps(BASE[CHAT])).status_code)
            unfinished = gateway.rows(
                "SELECT id FROM audit_record WHERE request_id = {}", request_id
            )
            received = dechunk(read_to_the_end(sock, rest))
    finally:
        gateway.upstream.content = DEFAULT_CONTENT

    assert others and set(others) == {200}
    assert unfinished == []  # the gateway was still relaying, held back
    assert received.count(b"data: ") == SLOW_WORDS + 3
    assert received.endswith(b"data: [DONE]\n\n")
    [record] = wait_for_record(gateway, request_id)
    fields = orjson.loads(record["record"])
    assert fields["fate"] == "served"
    assert fields["response_sha256"] == hashlib.sha256(received).hexdigest()


def wait_for_record(gateway: Gateway, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + STALL_DEADLINE_SECONDS
    while True:
        rows = gateway.rows(
            "SELECT record FROM audit_record WHERE request_id = {}", request_id
        )
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
