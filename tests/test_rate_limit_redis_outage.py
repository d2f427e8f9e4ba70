"""Rate limits when Redis goes away mid-run and comes back.

Each test starts its own ``redis-server`` on a spare port, kills it while a
gateway is serving, and starts it again on the same port.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import PUBLIC_MODEL, GatewayProcess, provision
from tests.fixtures.gateway import gateway_config as config_for
from tests.fixtures.throwaway import RedisServer
from tests.test_rate_limit_gateway import MESSAGES, rate_limited

BOUND_SECONDS = 2.0
"""No request may take this long: the Redis timeout is 0.25 s."""
RECOVERY_SECONDS = 20.0


def serve(
    tmp_path: Path, upstream: FakeUpstream, server: RedisServer, **stage: Any
) -> tuple[GatewayProcess, str]:
    url = f"sqlite:///{tmp_path / 'sluicegate.db'}"
    key = provision(url, ["acme"])["acme"]
    pipeline = rate_limited(
        {"scope": "workspace", "requests": 4, "per": "minute"}, **stage
    )
    env = {
        "SLUICEGATE_REDIS_URL": server.url,
        "SLUICEGATE_GATEWAY_PROCESSES": "2",
    }
    process = GatewayProcess(
        tmp_path, url, config_for(upstream), {"default": pipeline}, env=env
    )
    return process, key


def timed(process: GatewayProcess, key: str, count: int) -> list[tuple[int, float]]:
    """``count`` requests one after another: each status and duration."""
    results = []
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES}
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(count):
        started = time.monotonic()
        response = httpx.post(
            f"{process.base_url}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=30,
        )
        results.append((response.status_code, time.monotonic() - started))
    return results


def statuses(results: list[tuple[int, float]]) -> list[int]:
    assert all(seconds < BOUND_SECONDS for _, seconds in results), results
    return [status for status, _ in results]


def readiness(process: GatewayProcess) -> dict[str, Any]:
    checks: dict[str, Any] = httpx.get(f"{process.base_url}/readyz").json()["checks"]
    return checks


def wait_for_redis(process: GatewayProcess) -> None:
    deadline = time.monotonic() + RECOVERY_SECONDS
    while readiness(process)["redis"]["status"] != "ok":
        assert time.monotonic() < deadline, "the gateway never saw Redis again"
        time.sleep(0.2)


def test_fail_open_falls_back_to_per_process_limits_and_recovers(
    tmp_path: Path, upstream: FakeUpstream, throwaway_redis: RedisServer
) -> None:
    process, key = serve(tmp_path, upstream, throwaway_redis, on_failure="open")
    with process:
        assert statuses(timed(process, key, 5)) == [200, 200, 200, 200, 429]

        throwaway_redis.kill()
        assert statuses(timed(process, key, 5)) == [200, 200, 429, 429, 429]
        degraded = readiness(process)["rate_limit"]
        assert degraded["status"] == "degraded"
        assert degraded["mode"] == "per-process"
        assert degraded["fail_open_admissions"] == 2

        throwaway_redis.start()
        wait_for_redis(process)
        assert statuses(timed(process, key, 5)) == [200, 200, 200, 200, 429]
        assert readiness(process)["rate_limit"] == {"status": "ok", "mode": "redis"}


def test_fail_closed_answers_503_while_redis_is_down_and_recovers(
    tmp_path: Path, upstream: FakeUpstream, throwaway_redis: RedisServer
) -> None:
    process, key = serve(tmp_path, upstream, throwaway_redis, on_failure="closed")
    with process:
        assert statuses(timed(process, key, 1)) == [200]

        throwaway_redis.kill()
        assert statuses(timed(process, key, 4)) == [503, 503, 503, 503]
        degraded = readiness(process)["rate_limit"]
        assert degraded["mode"] == "failing closed"
        assert degraded["fail_closed_refusals"] == 4

        throwaway_redis.start()
        wait_for_redis(process)
        assert statuses(timed(process, key, 4)) == [200, 200, 200, 200]
        assert upstream.calls == 5
