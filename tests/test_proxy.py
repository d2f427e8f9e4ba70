"""The OpenAI-compatible proxy, driven by the official openai SDK through a real
``sluicegate serve`` on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.fakes.upstream import Reply
from tests.fixtures.gateway import PUBLIC_MODEL, UPSTREAM_KEY, RunningGateway
from tests.fixtures.openapi import validate

MESSAGES = [{"role": "user", "content": "Say hello"}]


def client(gateway: RunningGateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=key or gateway.key, max_retries=0
    )


def async_client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=gateway.key, max_retries=0
    )


def test_a_chat_completion_goes_to_the_routed_upstream_model(
    gateway: RunningGateway,
) -> None:
    with client(gateway) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    sent = gateway.upstream.requests[-1]
    assert sent.json["model"] == "upstream-model"
    assert sent.json["messages"] == MESSAGES
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-sluicegate-overhead-ms"]) >= 0
    assert raw.headers["x-sluicegate-target"] == "mock/upstream-model"


def test_the_client_key_never_reaches_the_provider(gateway: RunningGateway) -> None:
    with client(gateway) as sdk:
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    sent = gateway.upstream.requests[-1]
    assert gateway.key not in str(sent.headers)


@pytest.mark.anyio
async def test_a_stream_arrives_as_chunks_with_the_usage_asked_for(
    gateway: RunningGateway,
) -> None:
    async with async_client(gateway) as sdk:
        stream = await sdk.chat.completions.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len(chunks) > 2


def test_a_stream_is_relayed_before_the_upstream_has_finished(
    gateway: RunningGateway,
) -> None:
    release = threading.Event()
    gateway.upstream.script([Reply(hold=release, hold_after=2)])
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {gateway.key}"},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        # The upstream is still holding the rest of its stream back.
        assert not release.is_set()
        release.set()
        rest = [line for line in lines if line]
    assert first.startswith("data: {")
    assert rest[-1] == "data: [DONE]"


def test_a_sync_stream_works_too(gateway: RunningGateway) -> None:
    with client(gateway) as sdk:
        stream = sdk.chat.completions.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_pass_through(gateway: RunningGateway) -> None:
    with client(gateway) as sdk:
        result = sdk.embeddings.create(model=PUBLIC_MODEL, input=["a", "b"])
    assert len(result.data) == 2
    assert gateway.upstream.requests[-1].path == "/v1/embeddings"


def test_models_lists_what_the_workspace_may_use(gateway: RunningGateway) -> None:
    with client(gateway) as sdk:
        everything = sorted(model.id for model in sdk.models.list())
    with client(gateway, gateway.keys["globex"]) as sdk:
        restricted = [model.id for model in sdk.models.list()]
    assert everything == ["other-model", "sluicegate-offline", PUBLIC_MODEL]
    assert restricted == [PUBLIC_MODEL]


def test_an_unknown_key_gets_401(gateway: RunningGateway) -> None:
    with (
        client(gateway, "sg-nope0000-" + "x" * 43) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_api_key"
    assert gateway.upstream.calls == 0


def test_a_model_the_workspace_may_not_use_gets_403(gateway: RunningGateway) -> None:
    with (
        client(gateway, gateway.keys["globex"]) as sdk,
        pytest.raises(openai.PermissionDeniedError) as caught,
    ):
        sdk.chat.completions.create(model="other-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_allowed"
    assert "globex" in caught.value.message
    assert gateway.upstream.calls == 0


def test_an_unknown_model_gets_404(gateway: RunningGateway) -> None:
    with client(gateway) as sdk, pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-9", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"


def post(gateway: RunningGateway, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=content,
        headers={
            "authorization": f"Bearer {gateway.key}",
            "content-type": "application/json",
            **headers,
        },
        timeout=30,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON list; send a JSON object"),
        (b'{"model": "test-model"}', "messages: got (missing)"),
        (
            b'{"model": "test-model", "messages": [], "stream": "yes"}',
            "messages: got []",
        ),
        (
            b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}',
            "model: got 7",
        ),
        (
            b'{"model": "test-model", "messages": [{"role": "robot"}]}',
            "messages.0.role: got 'robot'",
        ),
        (
            b'{"model": "test-model", "messages": [{"role": "user"}], '
            b'"max_tokens": -5}',
            "max_tokens: got -5",
        ),
        (b'\xff\xfe{"model": 1}', "not valid JSON"),
    ],
)
def test_a_bad_body_gets_400_with_the_field_and_nothing_is_sent(
    gateway: RunningGateway, body: bytes, expected: str
) -> None:
    response = post(gateway, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert expected in error["message"]
    assert gateway.upstream.calls == 0


def test_a_body_over_the_limit_gets_413(gateway: RunningGateway) -> None:
    response = post(gateway, b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_an_upstream_error_answer_gets_502(gateway: RunningGateway) -> None:
    gateway.upstream.script([Reply(status=500)])
    with client(gateway) as sdk, pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


def test_an_unreachable_upstream_gets_503(gateway: RunningGateway) -> None:
    gateway.upstream.script([Reply(reset=True)])
    with client(gateway) as sdk, pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_unavailable"


def test_responses_match_openais_published_schemas(gateway: RunningGateway) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    base = f"{gateway.base_url}/v1"
    chat = httpx.post(
        f"{base}/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": PUBLIC_MODEL, "messages": MESSAGES},
    )
    validate("CreateChatCompletionResponse", chat.json())
    embedding = httpx.post(
        f"{base}/embeddings",
        headers=headers,
        timeout=30,
        json={"model": PUBLIC_MODEL, "input": "hi"},
    )
    validate("CreateEmbeddingResponse", embedding.json())
    validate("ListModelsResponse", httpx.get(f"{base}/models", headers=headers).json())
    stream = httpx.post(
        f"{base}/chat/completions",
        headers=headers,
        timeout=30,
        json={
            "model": "sluicegate-offline",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = [
        line[6:] for line in stream.text.splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate(
            "CreateChatCompletionStreamResponse",
            httpx.Response(200, content=event).json(),
        )
    error = httpx.post(f"{base}/chat/completions", headers=headers, content=b"{")
    validate("ErrorResponse", error.json())


def test_the_offline_model_answers_with_no_provider(gateway: RunningGateway) -> None:
    with client(gateway) as sdk:
        completion = sdk.chat.completions.create(
            model="sluicegate-offline",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert "offline" in (completion.choices[0].message.content or "").lower()
    assert gateway.upstream.calls == 0


def test_every_response_has_a_request_id(gateway: RunningGateway) -> None:
    for response in (
        httpx.get(f"{gateway.base_url}/healthz"),
        httpx.get(f"{gateway.base_url}/v1/models"),
        httpx.get(f"{gateway.base_url}/no/such/route"),
    ):
        assert response.headers["x-request-id"].startswith("req_")


def test_readyz_reports_the_database(gateway: RunningGateway) -> None:
    ready = httpx.get(f"{gateway.base_url}/readyz").json()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["redis"]["status"] == "off"


def wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_changed_pipeline_is_picked_up_and_a_bad_change_keeps_the_last_good(
    gateway: RunningGateway,
) -> None:
    path = Path(gateway.process.workdir) / "pipelines" / "globex.yaml"
    with client(gateway, gateway.keys["globex"]) as sdk:

        def other_model_allowed() -> bool:
            try:
                sdk.chat.completions.create(model="other-model", messages=MESSAGES)  # type: ignore[arg-type]
            except openai.PermissionDeniedError:
                return False
            return True

        assert not other_model_allowed()
        path.write_text(
            yaml.safe_dump(
                {
                    "stages": [
                        {"type": "auth", "models": [PUBLIC_MODEL, "other-model"]},
                        {"type": "route"},
                    ]
                }
            )
        )
        wait_for(other_model_allowed)
        path.write_text("stages: [{type: auth, models: 5}, {type: route}]")
        time.sleep(1.0)
        assert other_model_allowed()
    assert "stages.0.models" in gateway.process.log()
