"""``/metrics`` after a mixed run agrees with what the clients saw."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakes.upstream import Reply
from tests.fixtures.gateway import PUBLIC_MODEL, RunningGateway
from tests.metrics_text import samples, total

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def client(gateway: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)


Seen = list[tuple[int, str]]
"""(status, error code) of each response the clients got; code "" if served."""


def mixed_run(gateway: RunningGateway) -> Seen:
    """Send a known mix; return what the clients saw."""
    bad_key = "sg-abcd1234-" + "x" * 43
    with (
        client(gateway, gateway.key) as acme,
        client(gateway, gateway.keys["globex"]) as globex,
        client(gateway, bad_key) as stranger,
    ):
        seen = served(acme)
        gateway.upstream.script([Reply(status=500)])
        failures = [
            (stranger, PUBLIC_MODEL),
            (globex, "other-model"),
            (acme, "no-such-model"),
            (acme, PUBLIC_MODEL),
        ]
        for sdk, model in failures:
            with pytest.raises(openai.APIStatusError) as caught:
                sdk.chat.completions.create(model=model, messages=MESSAGES)
            code = caught.value.response.json()["error"]["code"]
            seen.append((caught.value.status_code, code))
    return seen


def served(acme: openai.OpenAI) -> Seen:
    """Three whole answers and one stream."""
    for _ in range(3):
        acme.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)
    with acme.chat.completions.create(
        model=PUBLIC_MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        assert len(list(stream)) > 0
    return [(200, "")] * 4


@pytest.fixture
def run(gateway: RunningGateway) -> Seen:
    return mixed_run(gateway)


def test_the_mix_gives_the_statuses_the_test_expects(run: Seen) -> None:
    statuses = [status for status, _ in run]

    assert statuses[:7] == [200, 200, 200, 200, 401, 403, 404]
    assert statuses[7] in (502, 503, 504)


def test_http_responses_per_status_match_the_client(
    gateway: RunningGateway, run: Seen
) -> None:
    found = samples(gateway.base_url)

    name = "sluicegate_http_responses_total"
    for status in {status for status, _ in run}:
        expected = sum(1 for seen, _ in run if seen == status)
        assert total(found, name, route=CHAT, status=str(status)) == expected
    assert total(found, name, route=CHAT) == len(run)


def test_error_codes_are_counted_per_response(
    gateway: RunningGateway, run: Seen
) -> None:
    found = samples(gateway.base_url)

    name = "sluicegate_http_responses_total"
    for code in {code for _, code in run}:
        expected = sum(1 for _, seen in run if seen == code)
        assert total(found, name, route=CHAT, code=code) == expected


def test_pipeline_requests_equal_the_sum_over_their_statuses(
    gateway: RunningGateway, run: Seen
) -> None:
    found = samples(gateway.base_url)
    in_pipeline = [status for status, _ in run if status not in (401, 404)]

    name = "sluicegate_requests_total"
    for status in set(in_pipeline):
        expected = in_pipeline.count(status)
        assert total(found, name, status=str(status)) == expected
    assert total(found, name) == len(in_pipeline)
    assert total(found, name, fate="denied") == 1


def test_denials_name_the_stage_that_denied(gateway: RunningGateway, run: Seen) -> None:
    found = samples(gateway.base_url)

    assert (
        total(
            found,
            "sluicegate_denials_total",
            workspace="globex",
            stage="auth",
            code="model_not_allowed",
        )
        == 1
    )
    assert total(found, "sluicegate_denials_total") == 1


def test_latencies_are_observed_once_per_pipeline_request(
    gateway: RunningGateway, run: Seen
) -> None:
    found = samples(gateway.base_url)

    assert total(found, "sluicegate_request_seconds_count") == 6
    assert total(found, "sluicegate_overhead_seconds_count") == 6
    assert total(found, "sluicegate_time_to_first_token_seconds_count") == 1


def test_prompt_tokens_the_upstream_reported_are_counted(
    gateway: RunningGateway, run: Seen
) -> None:
    found = samples(gateway.base_url)

    prompt = total(found, "sluicegate_tokens_total", workspace="acme", kind="prompt")
    assert prompt == gateway.upstream.prompt_tokens * 4


def test_metric_labels_carry_no_request_id(gateway: RunningGateway, run: Seen) -> None:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text

    assert "req_" not in text
