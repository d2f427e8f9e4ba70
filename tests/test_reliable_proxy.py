"""Retries, deadlines, fallbacks, breakers and broken streams, end to end.

Two scripted fake upstreams (``primary`` and ``fallback``) behind a real
``sluicegate serve``, driven by the official openai SDK.  Every count is
exact: attempts per upstream, targets tried, breaker transitions.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import UPSTREAM_KEY, GatewayProcess, provision

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]
SEED = 7
BACKOFF_BASE = 0.05
COOLDOWN = 1.0
ROUTE = {
    "type": "route",
    "retries": 2,
    "deadline_seconds": 10,
    "backoff_base_seconds": BACKOFF_BASE,
    "backoff_max_seconds": 1,
    "retry_after_cap_seconds": 3,
    "seed": SEED,
}


@dataclass
class Proxy:
    process: GatewayProcess
    primary: FakeUpstream
    fallback: FakeUpstream
    keys: dict[str, str]

    def client(self, workspace: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.process.base_url}/v1",
            api_key=self.keys[workspace],
            max_retries=0,
        )

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.process.base_url}/readyz").json()
        return body


def config(primary: FakeUpstream, fallback: FakeUpstream) -> dict[str, Any]:
    def provider(upstream: FakeUpstream) -> dict[str, Any]:
        return {
            "kind": "openai",
            "base_url": upstream.base_url,
            "api_key_env": "SLUICEGATE_TEST_UPSTREAM_KEY",
        }

    primary_target = {"provider": "primary", "model": "model-a"}
    fallback_target = {"provider": "fallback", "model": "model-b"}
    return {
        "providers": {"primary": provider(primary), "fallback": provider(fallback)},
        "models": {
            "alone": {"targets": [primary_target]},
            "paired": {"targets": [primary_target, fallback_target]},
        },
    }


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    keys = provision(database_url, ["acme", "hasty"])
    pipelines = {
        "default": {"stages": [{"type": "auth"}, ROUTE]},
        "hasty": {"stages": [{"type": "auth"}, {**ROUTE, "deadline_seconds": 0.5}]},
    }
    breaker_env = {
        "SLUICEGATE_BREAKER_MINIMUM_CALLS": "4",
        "SLUICEGATE_BREAKER_FAILURE_RATE": "0.5",
        "SLUICEGATE_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN),
        "SLUICEGATE_BREAKER_HALF_OPEN_PROBES": "1",
    }
    with (
        FakeUpstream(expected_key=UPSTREAM_KEY) as primary,
        FakeUpstream(expected_key=UPSTREAM_KEY) as fallback,
    ):
        process = GatewayProcess(
            tmp_path, database_url, config(primary, fallback), pipelines, breaker_env
        )
        with process:
            yield Proxy(process, primary, fallback, keys)


def expected_waits(count: int) -> list[str]:
    """The full-jitter waits the seeded route stage draws, as its header shows."""
    rng = random.Random(SEED)
    waits = [rng.uniform(0, min(1.0, BACKOFF_BASE * 2**n)) for n in range(count)]
    return [f"{wait:.3f}" for wait in waits]


def test_two_503s_then_a_200_reach_the_client_as_a_200_after_three_attempts(
    proxy: Proxy,
) -> None:
    proxy.primary.script([Reply(status=503), Reply(status=503), Reply()])
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="alone", messages=MESSAGES
        )
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content
    assert proxy.primary.calls == 3
    assert raw.headers["x-sluicegate-attempts"] == "3"
    assert raw.headers["x-sluicegate-retry-waits"].split(",") == expected_waits(2)


def test_client_errors_are_never_retried(proxy: Proxy) -> None:
    proxy.primary.script([Reply(status=400)])
    with proxy.client() as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="paired", messages=MESSAGES)
    assert caught.value.code == "invalid_request"
    assert (proxy.primary.calls, proxy.fallback.calls) == (1, 0)


def test_a_target_that_keeps_failing_falls_back_to_the_next(proxy: Proxy) -> None:
    proxy.primary.default = Reply(status=502)
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="paired", messages=MESSAGES
        )
    assert raw.headers["x-sluicegate-target"] == "fallback/model-b"
    assert (proxy.primary.calls, proxy.fallback.calls) == (3, 1)
    assert raw.headers["x-sluicegate-attempts"] == "4"


def test_a_reset_connection_is_retried(proxy: Proxy) -> None:
    proxy.primary.script([Reply(reset=True)])
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="alone", messages=MESSAGES
        )
    assert raw.status_code == 200
    assert proxy.primary.calls == 2


def test_retry_after_2_is_waited_for(proxy: Proxy) -> None:
    proxy.primary.script([Reply(status=429, headers={"retry-after": "2"}), Reply()])
    started = time.monotonic()
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="alone", messages=MESSAGES
        )
    assert time.monotonic() - started >= 2.0
    assert raw.headers["x-sluicegate-retry-waits"] == "2.000"
    assert proxy.primary.calls == 2


def test_retry_after_ms_is_read_in_milliseconds(proxy: Proxy) -> None:
    proxy.primary.script(
        [Reply(status=503, headers={"retry-after-ms": "1500"}), Reply()]
    )
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="alone", messages=MESSAGES
        )
    assert raw.headers["x-sluicegate-retry-waits"] == "1.500"


def test_retry_after_over_the_cap_fails_over_without_waiting(proxy: Proxy) -> None:
    proxy.primary.script([Reply(status=429, headers={"retry-after": "30"})])
    with proxy.client() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="paired", messages=MESSAGES
        )
    assert raw.headers["x-sluicegate-target"] == "fallback/model-b"
    assert (proxy.primary.calls, proxy.fallback.calls) == (1, 1)
    assert "x-sluicegate-retry-waits" not in raw.headers


def test_retry_after_over_the_cap_on_the_last_target_passes_the_429_through(
    proxy: Proxy,
) -> None:
    proxy.primary.script([Reply(status=429, headers={"retry-after": "30"})])
    with proxy.client() as sdk, pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="alone", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "30"
    assert proxy.primary.calls == 1


def test_the_deadline_bounds_the_whole_request_with_a_504(proxy: Proxy) -> None:
    proxy.primary.default = Reply(delay=2)
    with (
        proxy.client("hasty") as sdk,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        sdk.chat.completions.create(model="paired", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert proxy.fallback.calls == 0


def test_a_dead_target_opens_its_breaker_and_is_skipped_until_a_probe(
    proxy: Proxy,
) -> None:
    proxy.primary.default = Reply(status=503)
    targets = []
    with proxy.client() as sdk:
        for _ in range(4):
            raw = sdk.chat.completions.with_raw_response.create(
                model="paired", messages=MESSAGES
            )
            targets.append(raw.headers["x-sluicegate-target"])
        # Three attempts of the first request and one of the second open it:
        # 4 calls (the minimum), all failed.
        assert proxy.primary.calls == 4
        assert targets == ["fallback/model-b"] * 4
        breaker = proxy.readyz()["checks"]["breakers"]["targets"]["primary/model-a"]
        assert breaker["state"] == "open"

        time.sleep(COOLDOWN + 0.1)
        proxy.primary.default = Reply()
        raw = sdk.chat.completions.with_raw_response.create(
            model="paired", messages=MESSAGES
        )
    assert raw.headers["x-sluicegate-target"] == "primary/model-a"
    assert proxy.primary.calls == 5
    assert proxy.fallback.calls == 4
    breaker = proxy.readyz()["checks"]["breakers"]["targets"]["primary/model-a"]
    assert breaker["state"] == "closed"


def test_an_open_breaker_on_the_only_target_fails_fast_with_503(
    proxy: Proxy,
) -> None:
    proxy.primary.default = Reply(status=500)
    with proxy.client() as sdk:
        for _ in range(2):  # 3 + 1 failed calls open the breaker
            with pytest.raises(openai.InternalServerError):
                sdk.chat.completions.create(model="alone", messages=MESSAGES)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="alone", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_unavailable"
    assert "circuit breaker" in caught.value.message
    assert proxy.primary.calls == 4


def test_an_open_breaker_makes_readyz_degraded(proxy: Proxy) -> None:
    proxy.primary.default = Reply(status=500)
    with proxy.client() as sdk:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                sdk.chat.completions.create(model="alone", messages=MESSAGES)
    readyz = proxy.readyz()
    assert readyz["status"] == "degraded"
    assert readyz["checks"]["breakers"]["scope"] == "per process"


def test_a_stream_cut_after_some_chunks_reaches_the_client_as_an_error(
    proxy: Proxy,
) -> None:
    proxy.primary.script([Reply(stream_cut_after=3)])
    received = []
    with proxy.client() as sdk, pytest.raises(openai.APIError) as caught:
        stream = sdk.chat.completions.create(
            model="paired", messages=MESSAGES, stream=True
        )
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert "broke off" in caught.value.message
    assert (proxy.primary.calls, proxy.fallback.calls) == (1, 0)


def test_a_truncated_stream_never_ends_with_done(proxy: Proxy) -> None:
    proxy.primary.script([Reply(stream_cut_after=2)])
    body = {"model": "alone", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        f"{proxy.process.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {proxy.keys['acme']}"},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert "data: [DONE]" not in lines
    assert '"code":"upstream_error"' in lines[-1]


def test_a_stream_that_fails_before_its_first_byte_is_retried(proxy: Proxy) -> None:
    proxy.primary.script([Reply(status=503), Reply()])
    with proxy.client() as sdk:
        stream = sdk.chat.completions.create(
            model="alone", messages=MESSAGES, stream=True
        )
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert proxy.primary.calls == 2


def test_a_client_hanging_up_mid_stream_cancels_the_upstream(proxy: Proxy) -> None:
    release = threading.Event()
    proxy.primary.script([Reply(hold=release, hold_after=2)])
    body = {"model": "alone", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        f"{proxy.process.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {proxy.keys['acme']}"},
        timeout=30,
    ) as response:
        next(line for line in response.iter_lines() if line)
    try:
        assert proxy.primary.wait_abandoned(1, timeout=10)
    finally:
        release.set()
