"""Rate limits end to end: real gateway processes, Redis and the openai SDK.

The pipelines here put a ``rate_limit`` stage before ``route``; the fake
upstream reports 10 prompt and 5 completion tokens for every answer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
import redis

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)

MESSAGES = [{"role": "user", "content": "Say hello"}]
"""9 characters: an estimate of 3 prompt tokens."""
SETTLE_SECONDS = 10.0


def rate_limited(*limits: dict[str, Any], **stage: Any) -> dict[str, Any]:
    return {
        "stages": [
            {"type": "auth"},
            {"type": "rate_limit", "limits": list(limits), **stage},
            {"type": "route", "retries": 0},
        ]
    }


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The limits live in Redis or in process; one database kind is enough."""
    return f"sqlite:///{tmp_path / 'sluicegate.db'}"


def redis_env(url: str, prefix: str) -> dict[str, str]:
    """Gateways sharing one Redis.

    The timeout is raised from 0.25 s because this machine's two cores are
    shared by several gateways and test runs: an event loop held up for a
    quarter second would count as a Redis failure, and the stage would fall
    back to per-process limits (tested on their own in the outage tests).
    """
    return {
        "SLUICEGATE_REDIS_URL": url,
        "SLUICEGATE_REDIS_PREFIX": prefix,
        "SLUICEGATE_REDIS_TIMEOUT_SECONDS": "2",
        "SLUICEGATE_GATEWAY_PROCESSES": "2",
    }


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def limiter_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The gateway environment of each limiter: none, or a shared Redis."""
    if request.param == "in-process":
        return {}
    return redis_env(
        request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    )


@contextlib.contextmanager
def gateway(
    tmp_path: Path,
    url: str,
    upstream: FakeUpstream,
    pipeline: dict[str, Any],
    env: dict[str, str],
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path, url, gateway_config(upstream), {"default": pipeline}, env=env
    )
    with process:
        yield process


def sdk(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def chat(base_url: str, key: str, **extra: Any) -> httpx.Response:
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, **extra}
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"authorization": f"Bearer {key}"},
    )


async def burst(base_urls: list[str], key: str, count: int) -> list[int]:
    """Send ``count`` requests at once, spread over the gateways; the statuses."""
    statuses: list[int] = []
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES}
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as http:

        async def one(base_url: str) -> None:
            response = await http.post(f"{base_url}/v1/chat/completions", json=body)
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, base_urls[index % len(base_urls)])
    return statuses


@pytest.mark.redis
def test_two_gateways_sharing_redis_admit_exactly_the_limit(
    tmp_path: Path,
    sqlite_url: str,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
) -> None:
    keys = provision(sqlite_url, ["acme", "warm-up"])
    pipeline = rate_limited({"scope": "workspace", "requests": 10, "per": "minute"})
    env = redis_env(redis_url, redis_prefix)
    with (
        gateway(tmp_path, sqlite_url, upstream, pipeline, env) as first,
        gateway(tmp_path, sqlite_url, upstream, pipeline, env) as second,
    ):
        for process in (first, second):
            assert chat(process.base_url, keys["warm-up"]).status_code == 200
        statuses = anyio.run(burst, [first.base_url, second.base_url], keys["acme"], 40)
    assert statuses.count(200) == 10
    assert statuses.count(429) == 30
    assert upstream.calls == 10 + 2


def test_an_admitted_response_carries_what_remains(
    tmp_path: Path,
    sqlite_url: str,
    upstream: FakeUpstream,
    limiter_env: dict[str, str],
) -> None:
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited(
        {"scope": "api_key", "requests": 3, "per": "minute"},
        {"scope": "workspace", "requests": 100, "per": "minute"},
        {"scope": "workspace", "tokens": 1000, "per": "minute"},
    )
    with (
        gateway(tmp_path, sqlite_url, upstream, pipeline, limiter_env) as process,
        sdk(process.base_url, key) as client,
    ):
        raw = client.chat.completions.with_raw_response.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,
            max_tokens=20,  # type: ignore[arg-type]
        )
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "977"


def test_a_request_over_the_limit_gets_429_with_retry_after(
    tmp_path: Path,
    sqlite_url: str,
    upstream: FakeUpstream,
    limiter_env: dict[str, str],
) -> None:
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited({"scope": "api_key", "requests": 2, "per": "minute"})
    with (
        gateway(tmp_path, sqlite_url, upstream, pipeline, limiter_env) as process,
        sdk(process.base_url, key) as client,
    ):
        for _ in range(2):
            client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    error = refused.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-ratelimit-limit-requests"] == "2"
    assert upstream.calls == 2


def test_token_limits_count_the_real_usage_after_each_response(
    tmp_path: Path,
    sqlite_url: str,
    upstream: FakeUpstream,
    limiter_env: dict[str, str],
) -> None:
    # Each request is estimated at 3 + 20 = 23 tokens and really uses 15:
    # settled, 0, 15 and 30 used leave room for three; estimates only for two.
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited({"scope": "workspace", "tokens": 60, "per": "minute"})
    with gateway(tmp_path, sqlite_url, upstream, pipeline, limiter_env) as process:
        responses = []
        for _ in range(4):
            responses.append(chat(process.base_url, key, max_tokens=20))
            process.settle()  # the correction lands right after each answer
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[2].headers["x-ratelimit-remaining-tokens"] == "7"
    assert responses[3].headers["x-ratelimit-remaining-tokens"] == "15"
    assert responses[3].json()["error"]["code"] == "rate_limit_exceeded"


def test_an_ip_limit_ignores_x_forwarded_for_from_an_untrusted_peer(
    tmp_path: Path, sqlite_url: str, upstream: FakeUpstream
) -> None:
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited({"scope": "ip", "requests": 1, "per": "minute"})
    with gateway(tmp_path, sqlite_url, upstream, pipeline, {}) as process:
        statuses = [
            _from(process.base_url, key, forwarded).status_code
            for forwarded in ("198.51.100.1", "198.51.100.2")
        ]
    assert statuses == [200, 429]


def test_an_ip_limit_reads_x_forwarded_for_from_a_trusted_proxy(
    tmp_path: Path, sqlite_url: str, upstream: FakeUpstream
) -> None:
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited({"scope": "ip", "requests": 1, "per": "minute"})
    env = {"SLUICEGATE_TRUSTED_PROXIES": "127.0.0.0/8"}
    with gateway(tmp_path, sqlite_url, upstream, pipeline, env) as process:
        statuses = [
            _from(process.base_url, key, forwarded).status_code
            for forwarded in ("198.51.100.1", "198.51.100.2", "198.51.100.1")
        ]
    assert statuses == [200, 200, 429]


def _from(base_url: str, key: str, forwarded: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        timeout=30,
        json={"model": PUBLIC_MODEL, "messages": MESSAGES},
        headers={"authorization": f"Bearer {key}", "x-forwarded-for": forwarded},
    )


@pytest.fixture
def three_slots(
    tmp_path: Path,
    sqlite_url: str,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway on Redis allowing each API key three requests in flight."""
    key = provision(sqlite_url, ["acme"])["acme"]
    pipeline = rate_limited({"scope": "api_key", "concurrent": 3})
    env = redis_env(redis_url, redis_prefix)
    with gateway(tmp_path, sqlite_url, upstream, pipeline, env) as process:
        yield process, key


@pytest.mark.redis
@pytest.mark.anyio
async def test_concurrency_returns_to_zero_after_errors_and_hang_ups(
    three_slots: tuple[GatewayProcess, str],
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
) -> None:
    process, key = three_slots
    slow = Reply(delay=HOLD_SECONDS)
    upstream.script([slow, slow, slow, Reply(status=500), Reply(status=500)])
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=process.base_url, headers=headers, timeout=30
    ) as http:
        async with anyio.create_task_group() as group:
            group.start_soon(_hang_up, http)
            group.start_soon(_post, http)
            group.start_soon(_post, http)
            await _wait_for_upstream(upstream, 3)
            assert (await _post(http)).status_code == 429
        failed = [(await _post(http)).status_code for _ in range(2)]
        assert all(status >= 500 for status in failed)

        in_flight = await anyio.to_thread.run_sync(
            _in_flight_after_settling, redis_url, redis_prefix
        )
        assert in_flight == 0

        upstream.script([slow, slow, slow])
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(_post, http)
            await _wait_for_upstream(upstream, 8)
            assert (await _post(http)).status_code == 429


HOLD_SECONDS = 2.0
"""How long the fake upstream holds the requests that fill the slots."""


async def _post(http: httpx.AsyncClient) -> httpx.Response:
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES}
    return await http.post("/v1/chat/completions", json=body)


async def _hang_up(http: httpx.AsyncClient) -> None:
    """Send a request and hang up before its answer arrives."""
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES}
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/chat/completions", json=body, timeout=HOLD_SECONDS / 2)


async def _wait_for_upstream(upstream: FakeUpstream, calls: int) -> None:
    """Wait until the upstream has received ``calls`` requests in all."""
    for _ in range(int(SETTLE_SECONDS / 0.02)):
        if upstream.calls >= calls:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"the upstream saw {upstream.calls} of {calls} requests")


def _in_flight_after_settling(redis_url: str, prefix: str) -> int:
    """Concurrency slots held once the after steps had time to run."""
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            held = sum(
                int(client.zcard(key))
                for key in client.scan_iter(match=f"{prefix}:*concurrent*")
            )
            if held == 0 or time.monotonic() > deadline:
                return held
            time.sleep(0.05)
    finally:
        client.close()
