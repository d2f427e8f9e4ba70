"""Anthropic in and out: the ``anthropic`` provider kind, ``POST /v1/messages``
and the translation between the two API shapes, driven by the official
``anthropic`` and ``openai`` SDKs through a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from sluicegate.providers.anthropic_translate import (
    chat_to_messages_request,
    messages_to_chat_request,
    messages_to_chat_response,
)
from tests.fakes.upstream import DEFAULT_CONTENT, FakeUpstream, Reply
from tests.fixtures.gateway import UPSTREAM_KEY, GatewayProcess, provision

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


@dataclass
class Gateway:
    process: GatewayProcess
    upstream: FakeUpstream
    key: str

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.process.base_url, api_key=self.key, max_retries=0
        )

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.process.base_url}/v1", api_key=self.key, max_retries=0
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    keys = provision(database_url, ["acme"])
    with FakeUpstream(expected_key=UPSTREAM_KEY) as upstream:
        key_env = "SLUICEGATE_TEST_UPSTREAM_KEY"
        config = {
            "providers": {
                "claude": {
                    "kind": "anthropic",
                    "base_url": f"http://127.0.0.1:{upstream.port}",
                    "api_key_env": key_env,
                },
                "compatible": {
                    "kind": "openai",
                    "base_url": upstream.base_url,
                    "api_key_env": key_env,
                },
            },
            "models": {
                "claude": {"targets": [{"provider": "claude", "model": "claude-up"}]},
                "gpt": {"targets": [{"provider": "compatible", "model": "gpt-up"}]},
            },
        }
        pipelines = {"default": {"stages": [{"type": "auth"}, {"type": "route"}]}}
        with GatewayProcess(tmp_path, database_url, config, pipelines) as process:
            yield Gateway(process, upstream, keys["acme"])


def test_the_anthropic_sdk_reaches_an_anthropic_target_natively(
    gateway: Gateway,
) -> None:
    with gateway.anthropic() as sdk:
        message = sdk.messages.create(
            model="claude", max_tokens=50, system="Be brief.", messages=MESSAGES
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_CONTENT
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["model"] == "claude-up"
    assert sent.json["system"] == "Be brief."


def test_the_anthropic_sdk_streams_from_an_anthropic_target(gateway: Gateway) -> None:
    with (
        gateway.anthropic() as sdk,
        sdk.messages.stream(model="claude", max_tokens=50, messages=MESSAGES) as s,
    ):
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == DEFAULT_CONTENT
    assert final.usage.output_tokens == 5
    assert final.stop_reason == "end_turn"


def test_the_anthropic_sdk_reaches_an_openai_target_through_translation(
    gateway: Gateway,
) -> None:
    with gateway.anthropic() as sdk:
        message = sdk.messages.create(
            model="gpt", max_tokens=50, system="Be brief.", messages=MESSAGES
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_CONTENT
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_anthropic_sdk_streams_from_an_openai_target(gateway: Gateway) -> None:
    with (
        gateway.anthropic() as sdk,
        sdk.messages.stream(model="gpt", max_tokens=50, messages=MESSAGES) as s,
    ):
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == DEFAULT_CONTENT
    assert final.usage.output_tokens == 5


def test_the_openai_sdk_works_against_an_anthropic_target(gateway: Gateway) -> None:
    with gateway.openai() as sdk:
        completion = sdk.chat.completions.create(model="claude", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 10
    assert gateway.upstream.requests[-1].json["max_tokens"] == 4096


def test_the_openai_sdk_streams_from_an_anthropic_target(gateway: Gateway) -> None:
    with gateway.openai() as sdk:
        stream = sdk.chat.completions.create(
            model="claude",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_CONTENT
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_errors_on_the_messages_route_have_anthropic_s_shape(
    gateway: Gateway,
) -> None:
    with (
        anthropic.Anthropic(
            base_url=gateway.process.base_url, api_key="sg-nope", max_retries=0
        ) as sdk,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        sdk.messages.create(model="claude", max_tokens=5, messages=MESSAGES)
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert gateway.upstream.calls == 0


def test_an_anthropic_stream_cut_midway_reaches_the_sdk_as_an_error(
    gateway: Gateway,
) -> None:
    gateway.upstream.script([Reply(stream_cut_after=4)])
    with (
        gateway.anthropic() as sdk,
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model="claude", max_tokens=50, messages=MESSAGES) as s,
    ):
        "".join(s.text_stream)
    assert "broke off" in str(caught.value)


def test_a_529_from_anthropic_is_retried(gateway: Gateway) -> None:
    gateway.upstream.script([Reply(status=529)])
    with gateway.anthropic() as sdk:
        message = sdk.messages.create(model="claude", max_tokens=5, messages=MESSAGES)
    assert message.content
    assert gateway.upstream.calls == 2


# -- translation, unit by unit -------------------------------------------------


def test_openai_tools_images_and_results_map_to_anthropic_blocks() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {}}}],
        "tool_choice": "required",
        "stop": "END",
    }
    out = chat_to_messages_request(body, "claude-up")
    assert out["system"] == "sys"
    assert out["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 1}}
    ]
    assert out["messages"][2]["content"][0]["type"] == "tool_result"
    assert out["tools"] == [{"name": "look", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any"}
    assert out["stop_sequences"] == ["END"]


def test_an_anthropic_tool_use_answer_maps_to_openai_tool_calls() -> None:
    answer = {
        "id": "msg_1",
        "model": "claude-up",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 2},
    }
    out = messages_to_chat_response(answer)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "look",
        "arguments": '{"q":1}',
    }
    assert out["usage"]["prompt_tokens"] == 9
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}


def test_anthropic_tool_results_become_openai_tool_messages() -> None:
    body = {
        "model": "gpt",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                    {"type": "text", "text": "go on"},
                ],
            }
        ],
    }
    out = messages_to_chat_request(body)
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "go on"}]},
    ]
