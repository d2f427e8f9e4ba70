"""Driving a gateway through a fault, and what must hold once it has passed.

The fault tests (``tests/test_faults_*.py``) run the full pipeline (audit,
auth, rate_limit, budget, route, eval_enqueue) on PostgreSQL and Redis, with a
priced model and a fake upstream that reports 10 prompt and 5 completion
tokens for every answer, so every served request costs exactly
:data:`COST_PER_REQUEST` micro-USD.  After recovery they check:

* one audit record per request that reached the pipeline (:func:`records_of`);
* one ledger row per served request and nothing else, so the ledger's spend is
  the provider's priced usage (:func:`ledger_ids`, :func:`ledger_spend`);
* no budget hold and no concurrency slot left in Redis (:func:`leftovers`);
* ``sluicegate audit verify`` exits 0 (:func:`chain_verifies`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import redis

from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import PUBLIC_MODEL, GatewayProcess
from tests.metrics_text import samples, total
from tests.test_audit_gateway import audit_verify, wait_for_records
from tests.test_budget_gateway import cost, ledger, priced_config

COST_PER_REQUEST = cost(10, 5)
MESSAGES = [{"role": "user", "content": "hi"}]
KEEP_KEYS = {"SLUICEGATE_KEY_CACHE_SECONDS": "3600"}
"""Keys stay trusted, so a fault never shows up as a failed key lookup."""
SETTLE_SECONDS = 20.0
REDIS_TIMEOUT = {"SLUICEGATE_REDIS_TIMEOUT_SECONDS": "1"}
"""Raised from 0.25 s so that a loaded test machine's stall is not taken for
an outage before the fault."""


def redis_env(url: str, prefix: str | None = None) -> dict[str, str]:
    """A gateway's environment for the Redis at ``url``, its keys under
    ``prefix`` (the server's default prefix if None)."""
    env = {"SLUICEGATE_REDIS_URL": url, **REDIS_TIMEOUT}
    if prefix is not None:
        env["SLUICEGATE_REDIS_PREFIX"] = prefix
    return env


def full_pipeline(
    *, hold_seconds: float = 660.0, lease_seconds: float = 900.0
) -> dict[str, Any]:
    """Every stage of a production pipeline, with limits never reached."""
    return {
        "stages": [
            {"type": "audit"},
            {"type": "auth"},
            {
                "type": "rate_limit",
                "limits": [
                    {"scope": "api_key", "requests": 1000, "per": "minute"},
                    {"scope": "api_key", "concurrent": 50},
                ],
                "concurrent_lease_seconds": lease_seconds,
            },
            {
                "type": "budget",
                "limits": [{"scope": "workspace", "usd": 100, "per": "day"}],
                "hold_seconds": hold_seconds,
            },
            {"type": "route", "retries": 0, "deadline_seconds": 60},
            {"type": "eval_enqueue", "evaluators": [{"name": "pii"}]},
        ]
    }


def full_gateway(
    workdir: Path,
    database_url: str,
    upstream: FakeUpstream,
    env: dict[str, str],
    pipeline: dict[str, Any] | None = None,
) -> GatewayProcess:
    """A gateway process running :func:`full_pipeline` for every workspace."""
    return GatewayProcess(
        workdir,
        database_url,
        priced_config(upstream),
        {"default": pipeline or full_pipeline()},
        env={**KEEP_KEYS, **env},
    )


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request as the client saw it."""

    status: int
    seconds: float
    request_id: str
    code: str | None

    @property
    def served(self) -> bool:
        return self.status == 200


def client(process: GatewayProcess, key: str) -> httpx.AsyncClient:
    """An HTTP client of ``key`` with no connection reuse, so every request
    meets the gateway afresh."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
    return httpx.AsyncClient(
        base_url=process.base_url,
        headers={"authorization": f"Bearer {key}"},
        limits=limits,
        timeout=60,
    )


async def send(http: httpx.AsyncClient, *, stream: bool = False) -> Sent:
    """One chat completion read to its end: what came back, how long it took."""
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": stream}
    started = time.monotonic()
    response = await http.post("/v1/chat/completions", json=body)
    seconds = time.monotonic() - started
    code = None
    if response.status_code != 200:
        code = response.json()["error"]["code"]
    return Sent(response.status_code, seconds, response.headers["x-request-id"], code)


async def send_many(
    http: httpx.AsyncClient, count: int, *, stream: bool = False
) -> list[Sent]:
    """``count`` requests at once."""
    results: list[Sent] = []

    async def one() -> None:
        results.append(await send(http, stream=stream))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return results


async def upstream_reached(upstream: FakeUpstream, calls: int) -> None:
    """Wait until the upstream has received ``calls`` requests in all."""
    for _ in range(int(SETTLE_SECONDS / 0.01)):
        if upstream.calls >= calls:
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"the upstream saw {upstream.calls} of {calls} requests")


def slowest(sent: list[Sent]) -> float:
    return max(one.seconds for one in sent)


def statuses(sent: list[Sent]) -> list[tuple[int, str | None]]:
    """(status, error code) of each request, sorted."""
    return sorted((one.status, one.code) for one in sent)


# -- what must hold afterwards -----------------------------------------------------


def records_of(database_url: str, sent: list[Sent]) -> dict[str, dict[str, Any]]:
    """The audit records (request id -> record), once there are as many as
    requests in ``sent`` or the wait is over."""
    return wait_for_records(database_url, len(sent))


def ledger_ids(database_url: str) -> list[str]:
    return sorted(str(row["request_id"]) for row in ledger(database_url))


def ledger_spend(database_url: str) -> int:
    return sum(int(row["cost_micros"]) for row in ledger(database_url))


def served_ids(sent: list[Sent]) -> list[str]:
    return sorted(one.request_id for one in sent if one.served)


def chain_verifies(database_url: str) -> str:
    """'' if ``sluicegate audit verify`` exits 0, else what it printed."""
    result = audit_verify(database_url)
    return "" if result.returncode == 0 else result.stdout + result.stderr


@dataclass(frozen=True)
class Leftovers:
    """What the budget and rate_limit stages still hold in Redis."""

    holds: int
    """``h:<request id>`` fields of budget counters: reservations not settled."""
    reserved: int
    """The sum of the budget counters' ``reserved``."""
    slots: int
    """Members of concurrency sets: requests counted as in flight."""


NOTHING_LEFT = Leftovers(0, 0, 0)


def leftovers(redis_url: str, prefix: str) -> Leftovers:
    """Holds, reservations and concurrency slots under ``prefix`` right now."""
    connection = redis.Redis.from_url(redis_url)
    try:
        holds = reserved = slots = 0
        for key in connection.scan_iter(match=f"{prefix}:budget:*"):
            if connection.type(key) != b"hash":
                continue
            fields = connection.hgetall(key)
            holds += sum(1 for name in fields if name.startswith(b"h:"))
            reserved += int(fields.get(b"reserved", 0))
        for key in connection.scan_iter(match=f"{prefix}:*:rl:*:concurrent/*"):
            slots += int(connection.zcard(key))
        return Leftovers(holds, reserved, slots)
    finally:
        connection.close()


def settled_leftovers(redis_url: str, prefix: str) -> Leftovers:
    """:func:`leftovers` once there are none, or when the wait is over."""
    deadline = time.monotonic() + SETTLE_SECONDS
    found = leftovers(redis_url, prefix)
    while found != NOTHING_LEFT and time.monotonic() < deadline:
        time.sleep(0.1)
        found = leftovers(redis_url, prefix)
    return found


def fail_open_admissions(process: GatewayProcess, stage: str) -> int:
    found = samples(process.base_url)
    return int(total(found, "sluicegate_fail_open_admissions_total", stage=stage))


def wait_for_redis(process: GatewayProcess) -> None:
    """Until the gateway's ``/readyz`` sees Redis answer again."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        checks = httpx.get(f"{process.base_url}/readyz", timeout=10).json()["checks"]
        if checks["redis"]["status"] == "ok":
            return
        assert time.monotonic() < deadline, "the gateway never saw Redis again"
        time.sleep(0.2)


def spooled(workdir: Path, kind: str = "audit") -> int:
    """Items waiting in the spool files of ``kind`` (``audit`` records or
    ``ledger`` rows) under ``workdir``."""
    return sum(
        len(path.read_bytes().splitlines())
        for path in (workdir / "spool").glob(f"{kind}-*.jsonl")
    )


def wait_for_spooled(workdir: Path, count: int, kind: str = "audit") -> int:
    """:func:`spooled` once it reaches ``count``, or when the wait is over."""
    deadline = time.monotonic() + SETTLE_SECONDS
    found = spooled(workdir, kind)
    while found < count and time.monotonic() < deadline:
        time.sleep(0.1)
        found = spooled(workdir, kind)
    return found


def drained_spool(workdir: Path, kind: str = "audit") -> int:
    """:func:`spooled` once the spool is empty, or when the wait is over."""
    deadline = time.monotonic() + SETTLE_SECONDS
    found = spooled(workdir, kind)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = spooled(workdir, kind)
    return found


def settled_ledger_ids(database_url: str, count: int) -> list[str]:
    """:func:`ledger_ids` once there are ``count``, or when the wait is over."""
    deadline = time.monotonic() + SETTLE_SECONDS
    found = ledger_ids(database_url)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        found = ledger_ids(database_url)
    return found
