"""The openai provider against a real HTTP server (the fake upstream)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import orjson
import pytest

from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.errors import ConfigError, ProviderError
from sluicegate.core.gateway_config import parse_config
from sluicegate.core.provider import UpstreamCall
from sluicegate.providers.openai import OpenAIProvider, StreamRelay
from sluicegate.providers.sse import EventSplitter, data_of, error_event
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import free_port
from tests.fixtures.openapi import validate

KEY = "sk-test-provider-key-0123456789abcdef"
KEY_ENV = "SLUICEGATE_TEST_UPSTREAM_KEY"
MODEL = "upstream-model"
TARGET = f"fake/{MODEL}"
PROMPT = "Say hello"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(expected_key=KEY) as up:
        yield up


@pytest.fixture
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def config(base_url: str, **fields: Any) -> OpenAIProvider.Config:
    return OpenAIProvider.Config(
        kind="openai", base_url=base_url, api_key_env=KEY_ENV, **fields
    )


@pytest.fixture
async def provider(
    upstream: FakeUpstream, key_in_env: None
) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider("fake", config(upstream.base_url))
    yield provider
    await provider.close()


def chat_call(
    *, stream: bool = False, timeout: float | None = None, **extra: Any
) -> UpstreamCall:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return UpstreamCall(TARGET, MODEL, body, stream, "req-1", timeout)


def relay_of(response: UpstreamResponse) -> StreamRelay:
    assert isinstance(response.stream, StreamRelay)
    return response.stream


async def read_all(response: UpstreamResponse) -> list[bytes]:
    return [chunk async for chunk in relay_of(response)]


async def read_until_failure(response: UpstreamResponse) -> tuple[bytes, ProviderError]:
    received = b""
    with pytest.raises(ProviderError) as caught:
        async for chunk in relay_of(response):
            received += chunk
    return received, caught.value


async def failure_of(provider: OpenAIProvider, call: UpstreamCall) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.chat(call)
    return caught.value


def event_data(raw: bytes) -> list[bytes]:
    return [event.removeprefix(b"data: ") for event in raw.split(b"\n\n") if event]


# -- whole answers --------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_returns_the_upstream_body_and_usage(
    provider: OpenAIProvider,
) -> None:
    response = await provider.chat(chat_call())

    assert response.status == 200
    assert response.target == TARGET
    assert response.stream is None
    assert response.body is not None
    validate("CreateChatCompletionResponse", response.body)
    assert response.body["choices"][0]["message"]["content"] == (
        "Hello from the fake upstream."
    )
    assert response.usage == Usage(prompt_tokens=10, completion_tokens=5)


@pytest.mark.anyio
async def test_cached_tokens_come_from_prompt_tokens_details(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.cached_tokens = 4

    response = await provider.chat(chat_call())

    assert response.usage == Usage(
        prompt_tokens=10, completion_tokens=5, cached_tokens=4
    )


@pytest.mark.anyio
async def test_chat_posts_the_body_with_the_key_and_configured_headers(
    upstream: FakeUpstream, key_in_env: None
) -> None:
    provider = OpenAIProvider(
        "fake", config(upstream.base_url, headers={"OpenAI-Project": "proj_1"})
    )
    try:
        await provider.chat(chat_call(temperature=0))
    finally:
        await provider.close()

    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json == chat_call(temperature=0).body
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-project"] == "proj_1"


@pytest.mark.anyio
async def test_chat_without_usage_in_the_body_estimates_it(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(omit_usage=True)])

    response = await provider.chat(chat_call())

    # "Say hello" is 9 characters, the answer 29: about four characters a token.
    assert response.usage == Usage(prompt_tokens=3, completion_tokens=8)


@pytest.mark.anyio
async def test_embeddings_return_the_upstream_body_and_usage(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    call = UpstreamCall(
        TARGET, MODEL, {"model": MODEL, "input": ["a", "b"]}, False, "r"
    )

    response = await provider.embeddings(call)

    assert response.body is not None
    validate("CreateEmbeddingResponse", response.body)
    assert len(response.body["data"]) == 2
    assert response.usage == Usage(prompt_tokens=10, completion_tokens=0)
    assert upstream.requests[0].path == "/v1/embeddings"


@pytest.mark.anyio
async def test_a_body_that_is_not_json_is_a_provider_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(garbage=True)])

    error = await failure_of(provider, chat_call())

    assert error.status == 200
    assert "not a JSON object" in str(error)


# -- streams ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stream_relays_each_chunk_as_it_arrives(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    release = threading.Event()
    upstream.script([Reply(hold=release, hold_after=1)])
    response = await provider.chat(chat_call(stream=True))
    relay = relay_of(response)

    # The upstream sends nothing more until `release` is set: a relay that
    # waited for more than the first event would never get here.
    with anyio.fail_after(10):
        first = await anext(relay)
    release.set()
    rest = [chunk async for chunk in relay]

    assert response.media_type == "text/event-stream"
    assert len(event_data(first)) == 1
    assert b'"role":"assistant"' in first
    assert event_data(b"".join(rest))[-1] == b"[DONE]"


@pytest.mark.anyio
async def test_a_stream_takes_its_usage_from_the_final_usage_chunk(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.completion_tokens = 6
    call = chat_call(stream=True, stream_options={"include_usage": True})

    response = await provider.chat(call)
    chunks = await read_all(response)

    assert response.usage == Usage(prompt_tokens=10, completion_tokens=6)
    for data in event_data(b"".join(chunks))[:-1]:
        validate("CreateChatCompletionStreamResponse", orjson.loads(data))


@pytest.mark.anyio
async def test_a_stream_without_a_usage_chunk_gets_an_estimate(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(omit_usage=True)])
    call = chat_call(stream=True, stream_options={"include_usage": True})

    response = await provider.chat(call)
    await read_all(response)

    assert response.usage == Usage(prompt_tokens=3, completion_tokens=8)


@pytest.mark.anyio
async def test_a_stream_cut_midway_raises_after_the_chunks_that_arrived(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(stream_cut_after=3)])

    response = await provider.chat(chat_call(stream=True))
    received, error = await read_until_failure(response)

    assert len(event_data(received)) == 3
    assert error.retryable is False
    assert error.timeout is False
    assert response.usage is not None


@pytest.mark.anyio
async def test_a_stream_ending_without_done_raises(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(omit_done=True)])

    response = await provider.chat(chat_call(stream=True))
    received, error = await read_until_failure(response)

    assert len(event_data(received)) == 7
    assert "[DONE]" in str(error)
    assert error.retryable is False


@pytest.mark.anyio
async def test_a_stream_request_answered_with_an_error_raises_before_streaming(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(status=429, headers={"retry-after": "3"})])

    error = await failure_of(provider, chat_call(stream=True))

    assert (error.status, error.retryable, error.retry_after) == (429, True, 3.0)


@pytest.mark.anyio
async def test_a_stream_request_answered_with_json_is_a_provider_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(body={"id": "not-a-stream"})])

    error = await failure_of(provider, chat_call(stream=True))

    assert "text/event-stream" in str(error)
    assert error.retryable is False


@pytest.mark.anyio
async def test_stopping_a_stream_early_closes_the_upstream_response(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(hold=threading.Event())])
    response = await provider.chat(chat_call(stream=True))
    relay = relay_of(response)

    await anext(relay)
    await relay.aclose()

    assert await upstream.hung_up(1)
    assert response.usage is not None


@pytest.mark.anyio
async def test_closing_a_stream_never_read_closes_the_upstream_response(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(hold=threading.Event())])
    response = await provider.chat(chat_call(stream=True))

    await relay_of(response).aclose()

    assert await upstream.hung_up(1)


@pytest.mark.anyio
async def test_cancelling_the_consumer_closes_the_upstream_response(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(hold=threading.Event())])
    response = await provider.chat(chat_call(stream=True))
    relay = relay_of(response)
    await anext(relay)

    async def wait_for_the_next_chunk() -> None:
        await anext(relay)

    async with anyio.create_task_group() as group:
        group.start_soon(wait_for_the_next_chunk)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()

    assert await upstream.hung_up(1)
    with pytest.raises(StopAsyncIteration):
        await anext(relay)


@pytest.mark.anyio
async def test_a_stream_is_relayed_byte_for_byte(key_in_env: None) -> None:
    sent = [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\r\n',
        b'\r\ndata: {"choices":[],"usa',
        b'ge":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}\r\n\r\n',
        b"data: [DONE]\r\n\r\n",
    ]

    async def body() -> AsyncIterator[bytes]:
        for chunk in sent:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body()
        )

    provider = OpenAIProvider(
        "mock",
        config("http://upstream.test/v1"),
        transport=httpx.MockTransport(handler),
    )
    try:
        response = await provider.chat(chat_call(stream=True))
        received = await read_all(response)
    finally:
        await provider.close()

    assert received == sent
    assert response.usage == Usage(prompt_tokens=2, completion_tokens=1)


# -- failures ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
async def test_an_error_status_maps_to_its_retryable_flag(
    provider: OpenAIProvider, upstream: FakeUpstream, status: int, retryable: bool
) -> None:
    upstream.script([Reply(status=status)])

    error = await failure_of(provider, chat_call())

    assert (error.status, error.retryable, error.timeout) == (status, retryable, False)
    assert f"HTTP {status}" in str(error)
    assert f"scripted to answer {status}" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"retry-after": "7"}, 7.0, 7.0),
        ({"retry-after": "1.5"}, 1.5, 1.5),
        ({"retry-after-ms": "250"}, 0.25, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25, 0.25),
    ],
    ids=["seconds", "fractional-seconds", "milliseconds", "ms-first"],
)
async def test_retry_after_is_read_from_the_headers(
    provider: OpenAIProvider,
    upstream: FakeUpstream,
    headers: dict[str, str],
    low: float,
    high: float,
) -> None:
    upstream.script([Reply(status=503, headers=headers)])

    error = await failure_of(provider, chat_call())

    assert error.retry_after is not None
    assert low <= error.retry_after <= high


@pytest.mark.anyio
async def test_retry_after_may_be_an_http_date(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    upstream.script([Reply(status=503, headers={"retry-after": http_date(when)})])

    error = await failure_of(provider, chat_call())

    # HTTP dates have whole seconds; the rest is time spent getting here.
    assert error.retry_after is not None
    assert 45.0 <= error.retry_after <= 60.0


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


@pytest.mark.anyio
async def test_an_unreadable_retry_after_is_ignored(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(status=503, headers={"retry-after": "soon"})])

    error = await failure_of(provider, chat_call())

    assert error.retry_after is None


@pytest.mark.anyio
async def test_a_reset_connection_is_a_retryable_provider_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(reset=True)])

    error = await failure_of(provider, chat_call())

    assert (error.status, error.retryable, error.timeout) == (None, True, False)


@pytest.mark.anyio
async def test_a_refused_connection_is_a_retryable_provider_error(
    key_in_env: None,
) -> None:
    provider = OpenAIProvider("down", config(f"http://127.0.0.1:{free_port()}/v1"))
    try:
        error = await failure_of(provider, chat_call())
    finally:
        await provider.close()

    assert (error.status, error.retryable) == (None, True)


@pytest.mark.anyio
async def test_an_attempt_past_its_timeout_is_a_retryable_timeout(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(delay=5)])

    error = await failure_of(provider, chat_call(timeout=0.2))

    assert (error.timeout, error.retryable) == (True, True)


@pytest.mark.anyio
async def test_a_stream_past_its_timeout_raises_a_timeout(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(hold=threading.Event())])

    response = await provider.chat(chat_call(stream=True, timeout=1.0))
    received, error = await read_until_failure(response)

    assert len(event_data(received)) == 1
    assert (error.timeout, error.retryable) == (True, False)


@pytest.mark.anyio
async def test_the_key_never_appears_in_a_provider_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}.", "code": None}}
    upstream.script([Reply(status=401, body=echo)])

    error = await failure_of(provider, chat_call())

    assert "Incorrect API key provided" in str(error)
    assert KEY not in str(error)
    assert KEY not in repr(error.args)
    assert KEY.encode() not in error.body


@pytest.mark.anyio
async def test_the_message_quotes_at_most_300_chars_of_the_upstream_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(status=400, body={"error": {"message": "x" * 1000}})])

    error = await failure_of(provider, chat_call())

    assert "x" * 300 + "…" in str(error)
    assert "x" * 301 not in str(error)


@pytest.mark.anyio
async def test_redirects_are_not_followed(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script([Reply(status=307, headers={"location": "http://elsewhere.test/"})])

    error = await failure_of(provider, chat_call())

    assert (error.status, error.retryable) == (307, False)
    assert "redirects are not followed" in str(error)
    assert upstream.calls == 1


@pytest.mark.anyio
async def test_proxy_environment_variables_are_ignored(
    provider: OpenAIProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)

    response = await provider.chat(chat_call())

    assert response.status == 200


# -- configuration -----------------------------------------------------------------


def test_a_missing_key_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACME_UNSET_KEY", raising=False)
    settings = OpenAIProvider.Config(
        kind="openai", base_url="https://api.acme.test/v1", api_key_env="ACME_UNSET_KEY"
    )

    with pytest.raises(ConfigError) as caught:
        OpenAIProvider("acme", settings)

    assert "ACME_UNSET_KEY" in str(caught.value)
    assert "'acme'" in str(caught.value)


def test_an_unusable_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-has a space")

    with pytest.raises(ConfigError) as caught:
        OpenAIProvider("acme", config("https://api.acme.test/v1"))

    assert "sk-has" not in str(caught.value)
    assert KEY_ENV in str(caught.value)


@pytest.mark.anyio
async def test_no_key_variable_means_no_authorization_header() -> None:
    with FakeUpstream() as keyless:
        settings = OpenAIProvider.Config(kind="openai", base_url=keyless.base_url)
        provider = OpenAIProvider("local", settings)
        try:
            await provider.chat(chat_call())
        finally:
            await provider.close()

    assert "authorization" not in keyless.requests[0].headers


@pytest.mark.parametrize(
    "base_url",
    ["ftp://api.acme.test/v1", "api.acme.test/v1", "https://user:pw@acme.test/v1"],
)
def test_base_url_must_be_a_plain_http_url(base_url: str) -> None:
    raw = {"providers": {"acme": {"kind": "openai", "base_url": base_url}}}

    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {"openai": OpenAIProvider}, source="gateway.yaml")

    (problem,) = caught.value.problems
    assert problem.path == "providers.acme.base_url"
    assert "https://api.openai.com/v1" in problem.allowed


def test_base_url_loses_its_trailing_slash() -> None:
    settings = OpenAIProvider.Config(kind="openai", base_url="https://acme.test/v1/")

    assert settings.base_url == "https://acme.test/v1"


# -- SSE framing ----------------------------------------------------------------------


def test_the_splitter_finds_events_across_chunks_and_line_endings() -> None:
    splitter = EventSplitter()

    found = [
        *splitter.feed(b"data: a\n"),
        *splitter.feed(b"\ndata: b\r\n\r"),
        *splitter.feed(b"\n: comment\n\ndata: c"),
    ]

    assert [data_of(event) for event in found] == [b"a", b"b", None]
    assert splitter.pending == b"data: c"


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert data_of(b"event: x\ndata: one\ndata:two") == b"one\ntwo"


def test_an_error_event_has_the_openai_error_shape() -> None:
    event = error_event("the provider's stream broke off", "upstream_error")

    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    validate("ErrorResponse", orjson.loads(event[6:]))
