"""The offline provider answers like OpenAI, says it is offline, and is
deterministic."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson
import pytest

from sluicegate.core.context import UpstreamResponse, Usage
from sluicegate.core.errors import ProviderError
from sluicegate.core.gateway_config import OFFLINE_MODEL, default_config
from sluicegate.core.provider import ProviderConfig, UpstreamCall
from sluicegate.providers.offline import OfflineProvider
from sluicegate.providers.sse import aiter_data
from tests.fixtures.openapi import validate

MODEL = "echo"
NOTICE = "sluicegate's offline provider, not a real model"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def provider() -> OfflineProvider:
    return OfflineProvider("offline", ProviderConfig(kind="offline"))


def chat_call(
    messages: list[dict[str, Any]] | None = None,
    *,
    stream: bool = False,
    request_id: str = "req-1",
    **extra: Any,
) -> UpstreamCall:
    if messages is None:
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is a sluice gate?"},
        ]
    body = {"model": MODEL, "messages": messages, "stream": stream, **extra}
    return UpstreamCall(f"offline/{MODEL}", MODEL, body, stream, request_id)


def embeddings_call(value: Any, **extra: Any) -> UpstreamCall:
    body = {"model": MODEL, "input": value, **extra}
    return UpstreamCall(f"offline/{MODEL}", MODEL, body, False, "req-1")


def text_of(response: UpstreamResponse) -> str:
    assert response.body is not None
    content = response.body["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


async def stream_chunks(response: UpstreamResponse) -> list[bytes]:
    assert response.stream is not None
    return [data async for data in aiter_data(response.stream)]


# -- chat ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_answer_validates_against_openai_schema(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(chat_call())

    assert response.body is not None
    validate("CreateChatCompletionResponse", response.body)
    assert response.body["id"].startswith("chatcmpl-")
    assert response.body["model"] == MODEL


@pytest.mark.anyio
async def test_chat_answer_says_it_is_offline_and_echoes_the_last_user_message(
    provider: OfflineProvider,
) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]

    text = text_of(await provider.chat(chat_call(messages)))

    assert NOTICE in text
    assert '"second question"' in text
    assert "first question" not in text


@pytest.mark.anyio
async def test_a_long_message_is_echoed_truncated(provider: OfflineProvider) -> None:
    messages = [{"role": "user", "content": "word " * 200}]

    text = text_of(await provider.chat(chat_call(messages)))

    assert len(text) < 400
    assert text.endswith('…"')


@pytest.mark.anyio
async def test_a_conversation_without_user_message_is_answered(
    provider: OfflineProvider,
) -> None:
    messages = [{"role": "system", "content": "Be brief."}]

    text = text_of(await provider.chat(chat_call(messages)))

    assert NOTICE in text
    assert "no user message" in text


@pytest.mark.anyio
async def test_the_same_request_gets_the_same_answer(provider: OfflineProvider) -> None:
    first = await provider.chat(chat_call())
    second = await provider.chat(chat_call())

    assert first.body is not None

    assert second.body is not None
    assert first.body["id"] == second.body["id"]
    assert first.body["choices"] == second.body["choices"]
    assert first.usage == second.usage


@pytest.mark.anyio
async def test_usage_is_about_four_characters_a_token(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(chat_call())

    prompt_chars = len("Be brief.") + len("What is a sluice gate?")
    expected = Usage(math.ceil(prompt_chars / 4), math.ceil(len(text_of(response)) / 4))
    assert response.usage == expected
    assert response.body is not None
    assert response.body["usage"] == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.total_tokens,
    }


@pytest.mark.anyio
async def test_chat_without_messages_is_a_client_error(
    provider: OfflineProvider,
) -> None:
    call = UpstreamCall("offline/echo", MODEL, {"model": MODEL}, False, "req-1")

    with pytest.raises(ProviderError) as caught:
        await provider.chat(call)

    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "'messages'" in str(caught.value)


# -- streams ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_chunks_validate_against_openai_schema(
    provider: OfflineProvider,
) -> None:
    call = chat_call(stream=True, stream_options={"include_usage": True})

    response = await provider.chat(call)
    data = await stream_chunks(response)

    assert response.media_type == "text/event-stream"
    assert data[-1] == b"[DONE]"
    for chunk in data[:-1]:
        validate("CreateChatCompletionStreamResponse", orjson.loads(chunk))


@pytest.mark.anyio
async def test_stream_goes_role_content_finish_usage_done(
    provider: OfflineProvider,
) -> None:
    call = chat_call(stream=True, stream_options={"include_usage": True})

    response = await provider.chat(call)
    chunks = [orjson.loads(data) for data in (await stream_chunks(response))[:-1]]

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert response.usage is not None
    assert chunks[-1]["usage"]["total_tokens"] == response.usage.total_tokens
    pieces = [chunk["choices"][0]["delta"].get("content") for chunk in chunks[1:-2]]
    assert all(len(piece.split()) <= 3 for piece in pieces)


@pytest.mark.anyio
async def test_stream_text_is_the_whole_answer_text(provider: OfflineProvider) -> None:
    whole = await provider.chat(chat_call())
    streamed = await provider.chat(chat_call(stream=True))

    chunks = [orjson.loads(data) for data in (await stream_chunks(streamed))[:-1]]
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks
    )
    assert text == text_of(whole)
    assert streamed.usage == whole.usage


@pytest.mark.anyio
async def test_stream_has_no_usage_chunk_unless_asked(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(chat_call(stream=True))

    chunks = [orjson.loads(data) for data in (await stream_chunks(response))[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- embeddings ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "count"),
    [
        ("one text", 1),
        (["one", "two", "three"], 3),
        ([1, 2, 3], 1),
        ([[1, 2], [3]], 2),
    ],
    ids=["string", "strings", "token-array", "token-arrays"],
)
async def test_embeddings_have_one_vector_per_input(
    provider: OfflineProvider, value: Any, count: int
) -> None:
    response = await provider.embeddings(embeddings_call(value))

    assert response.body is not None
    validate("CreateEmbeddingResponse", response.body)
    assert [item["index"] for item in response.body["data"]] == list(range(count))
    assert all(len(item["embedding"]) == 8 for item in response.body["data"])


@pytest.mark.anyio
async def test_embeddings_are_deterministic_unit_vectors(
    provider: OfflineProvider,
) -> None:
    first = await provider.embeddings(embeddings_call(["alpha", "beta"]))
    again = await provider.embeddings(embeddings_call(["alpha"]))

    assert first.body is not None

    assert again.body is not None
    alpha, beta = (item["embedding"] for item in first.body["data"])
    assert again.body["data"][0]["embedding"] == alpha
    assert alpha != beta
    assert math.isclose(math.fsum(x * x for x in alpha), 1.0, abs_tol=1e-4)


@pytest.mark.anyio
async def test_embeddings_usage_counts_text_and_tokens(
    provider: OfflineProvider,
) -> None:
    response = await provider.embeddings(embeddings_call(["abcdefgh", "abc"]))
    tokens = await provider.embeddings(embeddings_call([[1, 2, 3], [4]]))

    assert response.usage == Usage(prompt_tokens=3, completion_tokens=0)
    assert tokens.usage == Usage(prompt_tokens=4, completion_tokens=0)


@pytest.mark.anyio
async def test_embeddings_honour_dimensions(provider: OfflineProvider) -> None:
    response = await provider.embeddings(embeddings_call("text", dimensions=32))

    assert response.body is not None
    assert len(response.body["data"][0]["embedding"]) == 32


@pytest.mark.anyio
async def test_embeddings_in_base64_are_little_endian_float32(
    provider: OfflineProvider,
) -> None:
    floats = await provider.embeddings(embeddings_call("text"))
    encoded = await provider.embeddings(
        embeddings_call("text", encoding_format="base64")
    )

    assert floats.body is not None

    assert encoded.body is not None
    raw = base64.b64decode(encoded.body["data"][0]["embedding"])
    decoded = struct.unpack("<8f", raw)
    expected = floats.body["data"][0]["embedding"]
    assert all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, expected, strict=True)
    )


@pytest.mark.anyio
@pytest.mark.parametrize("value", [None, [], [1, "two"], {"text": "x"}, [True]])
async def test_embeddings_refuse_an_input_of_another_shape(
    provider: OfflineProvider, value: Any
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.embeddings(embeddings_call(value))

    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "'input'" in str(caught.value)


# -- registration ------------------------------------------------------------------


def test_the_default_gateway_config_serves_the_offline_model() -> None:
    config = default_config({"offline": OfflineProvider})

    target = config.models[OFFLINE_MODEL].targets[0]
    assert config.providers[target.provider].kind == OfflineProvider.kind_name
