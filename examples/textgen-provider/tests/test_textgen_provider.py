"""The textgen provider translates chat to the server's API and back."""

from __future__ import annotations

import pytest
from sluicegate_textgen_provider import TextgenConfig, TextgenProvider, prompt_of

from sluicegate.core.errors import ProviderError
from sluicegate.core.provider import UpstreamCall
from tests.fakes.textgen import TextgenServer

pytestmark = pytest.mark.anyio

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]


def call(stream: bool = False, **body: object) -> UpstreamCall:
    return UpstreamCall(
        target="inhouse/7b",
        model="7b",
        stream=stream,
        request_id="req_1",
        body={"model": "7b", "messages": MESSAGES, **body},
    )


def provider(server: TextgenServer) -> TextgenProvider:
    config = TextgenConfig(kind="textgen", base_url=server.base_url)
    return TextgenProvider("inhouse", config)


def test_messages_become_one_prompt() -> None:
    assert prompt_of(MESSAGES) == "system: Be brief.\nuser: Hi\nassistant:"


async def test_a_chat_becomes_a_generate_call_and_a_completion() -> None:
    with TextgenServer() as server:
        textgen = provider(server)
        answer = await textgen.chat(call(max_tokens=20))
        await textgen.close()
    assert server.prompts == [
        {"prompt": prompt_of(MESSAGES), "max_new_tokens": 20, "temperature": 1.0}
    ]
    assert answer.body is not None
    assert answer.body["choices"][0]["message"]["content"] == "textgen says hi"
    assert answer.usage is not None and answer.usage.total_tokens == 10


async def test_a_stream_request_gets_the_answer_as_sse_chunks() -> None:
    with TextgenServer() as server:
        textgen = provider(server)
        answer = await textgen.chat(
            call(stream=True, stream_options={"include_usage": True})
        )
        assert answer.stream is not None
        events = b"".join([chunk async for chunk in answer.stream]).split(b"\n\n")
        await textgen.close()
    assert b"textgen says hi" in events[1]
    assert b'"total_tokens":10' in events[3]
    assert events[4] == b"data: [DONE]"


async def test_a_server_error_is_a_retryable_provider_error() -> None:
    with TextgenServer(status=503) as server:
        textgen = provider(server)
        with pytest.raises(ProviderError) as caught:
            await textgen.chat(call())
        await textgen.close()
    assert caught.value.status == 503 and caught.value.retryable
