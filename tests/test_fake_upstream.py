"""The fake upstream does what its script says, and answers like OpenAI."""

from __future__ import annotations

import base64
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.openapi import validate

KEY = "sk-fake-upstream-test-key"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
STREAM = {**CHAT, "stream": True}
STREAM_WITH_USAGE = {**STREAM, "stream_options": {"include_usage": True}}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.base_url, trust_env=False, timeout=10) as c:
        yield c


def events(raw: bytes) -> list[bytes]:
    """The data of each SSE event in ``raw``."""
    return [event.removeprefix(b"data: ") for event in raw.split(b"\n\n") if event]


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a stream, without ``[DONE]``."""
    return [orjson.loads(data) for data in events(raw) if data != b"[DONE]"]


# -- default answers ----------------------------------------------------------


def test_base_url_is_a_local_v1_root(upstream: FakeUpstream) -> None:
    assert upstream.base_url == f"http://127.0.0.1:{upstream.port}/v1"


def test_chat_answer_validates_and_reports_the_fixed_usage(
    client: httpx.Client,
) -> None:
    response = client.post("/chat/completions", json=CHAT)

    assert response.status_code == 200
    body = response.json()
    validate("CreateChatCompletionResponse", body)
    assert body["model"] == "fake-model"
    assert body["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert body["usage"]["prompt_tokens"] == 10
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == 15


def test_usage_and_content_are_configurable() -> None:
    with (
        FakeUpstream(
            prompt_tokens=7, completion_tokens=3, cached_tokens=2, content="Configured."
        ) as up,
        httpx.Client(base_url=up.base_url, trust_env=False) as client,
    ):
        body = client.post("/chat/completions", json=CHAT).json()

    assert body["choices"][0]["message"]["content"] == "Configured."
    assert body["usage"]["prompt_tokens"] == 7
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 2


def test_stream_chunks_validate_and_end_with_done(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=STREAM)

    assert response.headers["content-type"] == "text/event-stream"
    assert events(response.content)[-1] == b"[DONE]"
    for chunk in chunks(response.content):
        validate("CreateChatCompletionStreamResponse", chunk)
    text = "".join(
        chunk["choices"][0]["delta"].get("content", "")
        for chunk in chunks(response.content)
    )
    assert text == "Hello from the fake upstream."


def test_stream_sends_no_usage_chunk_unless_asked(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=STREAM)

    assert all("usage" not in chunk for chunk in chunks(response.content))


def test_stream_ends_with_a_usage_chunk_when_include_usage(
    client: httpx.Client,
) -> None:
    response = client.post("/chat/completions", json=STREAM_WITH_USAGE)

    last = chunks(response.content)[-1]
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == 15
    assert all(chunk["usage"] is None for chunk in chunks(response.content)[:-1])


def test_embeddings_answer_one_vector_per_input(client: httpx.Client) -> None:
    response = client.post("/embeddings", json={"model": "e", "input": ["a", "b"]})

    body = response.json()
    validate("CreateEmbeddingResponse", body)
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 10, "total_tokens": 10}


def test_embeddings_accept_a_token_array(client: httpx.Client) -> None:
    response = client.post("/embeddings", json={"model": "e", "input": [1, 2, 3]})

    assert len(response.json()["data"]) == 1


def test_embeddings_come_in_base64_when_asked(client: httpx.Client) -> None:
    body = {"model": "e", "input": "a", "encoding_format": "base64"}

    response = client.post("/embeddings", json=body)

    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    assert len(struct.unpack("<4f", raw)) == 4


def test_models_are_listed(client: httpx.Client) -> None:
    response = client.get("/models")

    validate("ListModelsResponse", response.json())
    assert [model["id"] for model in response.json()["data"]] == [
        "fake-model",
        "fake-embedding",
    ]


def test_an_unknown_route_is_a_404_error_body(client: httpx.Client) -> None:
    response = client.post("/completions", json=CHAT)

    assert response.status_code == 404
    validate("ErrorResponse", response.json())


# -- scripted replies ---------------------------------------------------------


def test_scripted_replies_are_used_in_order_then_the_default(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(status=503), Reply(status=429), Reply()])

    statuses = [client.post("/chat/completions", json=CHAT).status_code for _ in "1234"]

    assert statuses == [503, 429, 200, 200]


def test_a_scripted_error_has_an_openai_error_body(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(status=500)])

    response = client.post("/chat/completions", json=CHAT)

    validate("ErrorResponse", response.json())


def test_a_reply_sends_its_headers(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(status=503, headers={"retry-after": "2"})])

    response = client.post("/chat/completions", json=CHAT)

    assert response.headers["retry-after"] == "2"


def test_a_reply_sends_its_json_body(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(status=400, body={"error": {"message": "nope"}})])

    response = client.post("/chat/completions", json=CHAT)

    assert response.status_code == 400
    assert response.json() == {"error": {"message": "nope"}}


def test_a_reply_sets_the_assistant_text(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(content="Scripted words here")])

    body = client.post("/chat/completions", json=CHAT).json()

    assert body["choices"][0]["message"]["content"] == "Scripted words here"


def test_a_reply_waits_its_delay_before_answering(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(delay=0.2)])

    started = time.monotonic()
    client.post("/chat/completions", json=CHAT)

    assert time.monotonic() - started >= 0.2


def test_reset_drops_the_connection_without_a_response(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(reset=True)])

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/chat/completions", json=CHAT)
    assert client.post("/chat/completions", json=CHAT).status_code == 200


def test_garbage_is_a_200_whose_body_is_not_json(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(garbage=True)])

    response = client.post("/chat/completions", json=CHAT)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        orjson.loads(response.content)


def test_stream_cut_after_sends_that_many_events_then_drops(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(stream_cut_after=2)])
    received = b""

    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=STREAM) as response,
    ):
        for chunk in response.iter_bytes():
            received += chunk

    assert len(events(received)) == 2


def test_chunk_delay_spaces_the_events_of_a_stream(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(chunk_delay=0.05)])

    started = time.monotonic()
    response = client.post("/chat/completions", json=STREAM)

    assert time.monotonic() - started >= 0.05 * (len(events(response.content)) - 1)


def test_omit_done_ends_a_stream_cleanly_without_done(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(omit_done=True)])

    response = client.post("/chat/completions", json=STREAM)

    assert b"[DONE]" not in response.content
    assert len(chunks(response.content)) == 7


def test_omit_usage_leaves_usage_out_of_bodies_and_streams(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(omit_usage=True), Reply(omit_usage=True)])

    body = client.post("/chat/completions", json=CHAT).json()
    streamed = client.post("/chat/completions", json=STREAM_WITH_USAGE).content

    assert "usage" not in body
    assert all(chunk["usage"] is None for chunk in chunks(streamed))


def test_hold_pauses_a_stream_until_released(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    hold = threading.Event()
    upstream.script([Reply(hold=hold, hold_after=2)])
    received = b""

    with client.stream("POST", "/chat/completions", json=STREAM) as response:
        for chunk in response.iter_bytes():
            received += chunk
            if len(events(received)) == 2:
                hold.set()

    assert events(received)[-1] == b"[DONE]"


def test_a_client_hanging_up_during_a_hold_abandons_the_stream(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script([Reply(hold=threading.Event())])

    with client.stream("POST", "/chat/completions", json=STREAM) as response:
        next(response.iter_bytes())

    assert upstream.wait_abandoned(1)


# -- recording and authorization ----------------------------------------------


def test_every_request_is_recorded(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    client.post("/chat/completions?x=1", json=CHAT, headers={"X-Trace": "t1"})
    client.get("/models")

    first, second = upstream.requests
    method, path, headers, body = first
    assert (method, path, body) == ("POST", "/v1/chat/completions", CHAT)
    assert headers["x-trace"] == "t1"
    assert (second.method, second.path, second.json) == ("GET", "/v1/models", None)
    assert upstream.calls == 2


def test_requests_from_many_threads_are_all_counted(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: client.get("/models").status_code, range(40))
        )

    assert statuses == [200] * 40
    assert upstream.calls == 40


def test_a_wrong_key_gets_an_openai_401(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.expected_key = KEY

    response = client.post(
        "/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-wrong"}
    )

    assert response.status_code == 401
    validate("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_the_expected_key_is_accepted(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.expected_key = KEY

    response = client.post(
        "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
    )

    assert response.status_code == 200


def test_a_refused_request_does_not_use_the_script(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.expected_key = KEY
    upstream.script([Reply(status=503)])

    client.post("/chat/completions", json=CHAT)
    response = client.post(
        "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
    )

    assert response.status_code == 503


# -- lifecycle ------------------------------------------------------------------


def test_it_stops_cleanly_while_a_stream_is_held_open() -> None:
    with httpx.Client(trust_env=False) as client:
        with FakeUpstream() as up:
            up.script([Reply(hold=threading.Event())])
            request = client.build_request(
                "POST", f"{up.base_url}/chat/completions", json=STREAM
            )
            response = client.send(request, stream=True)
            received = response.iter_bytes()
            next(received)

        with pytest.raises(httpx.TransportError):
            list(received)
        response.close()


def test_two_fakes_listen_on_different_ports() -> None:
    with FakeUpstream() as one, FakeUpstream() as two:
        assert one.port != two.port
