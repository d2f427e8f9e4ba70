"""Budgets end to end: real ``sluicegate serve`` processes, the official openai
SDK as client, a fake upstream with fixed usage, a priced model so that every
cost is exact, and the usage ledger read back from the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from sluicegate.core.db.database import Database
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    free_port,
    gateway_config,
    provision,
)

PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2000}
"""Micro-USD per token: a prompt token costs 1000, a completion token 2000."""

MESSAGES = [{"role": "user", "content": "hi"}]
"""Estimated at 10 prompt tokens (3 priming, 4 framing, 2 role, 1 content)."""


def cost(prompt: int, completion: int) -> int:
    return prompt * 1000 + completion * 2000


def priced_config(upstream: FakeUpstream) -> dict[str, Any]:
    config = gateway_config(upstream)
    config["models"][PUBLIC_MODEL]["targets"][0]["price"] = PRICE
    return config


def pipeline(limits: list[dict[str, Any]], **budget: Any) -> dict[str, Any]:
    return {
        "stages": [
            {"type": "auth"},
            {"type": "budget", "limits": limits, **budget},
            {"type": "route", "retries": 0},
        ]
    }


def gateway(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    limits: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    **budget: Any,
) -> GatewayProcess:
    return GatewayProcess(
        tmp_path,
        database_url,
        priced_config(upstream),
        {"default": pipeline(limits, **budget)},
        env=env or {},
    )


def sdk(process: GatewayProcess, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{process.base_url}/v1", api_key=key, max_retries=0
    )


async def ask(client: openai.AsyncOpenAI, **extra: Any) -> int:
    """Send one chat completion; its HTTP status."""
    try:
        await client.chat.completions.create(
            model=PUBLIC_MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            **extra,
        )
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


async def ask_all(clients: list[openai.AsyncOpenAI], count: int, **extra: Any) -> Any:
    try:
        return await asyncio.gather(
            *(ask(clients[i % len(clients)], **extra) for i in range(count))
        )
    finally:
        for client in clients:
            await client.close()


async def _ledger(database_url: str) -> list[dict[str, Any]]:
    database = await Database.connect(database_url)
    try:
        return await database.fetch(
            "SELECT request_id, prompt_tokens, completion_tokens, cost_micros "
            "FROM usage ORDER BY id"
        )
    finally:
        await database.close()


def ledger(database_url: str) -> list[dict[str, Any]]:
    return anyio.run(_ledger, database_url)


def test_racing_requests_through_two_processes_never_overspend(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
) -> None:
    # Each request is estimated at cost(10, 5) = 20,000 and really costs
    # cost(9, 5) = 19,000 micro-USD: one dollar fits 50 of the 200.
    upstream.prompt_tokens = 9
    key = provision(database_url, ["acme"])["acme"]
    # A burst of 200 holds the event loops of two processes on a loaded test
    # machine; a short Redis timeout would then fail the budget closed (503),
    # which is the documented degraded mode but not what this test is about.
    env = {
        "SLUICEGATE_REDIS_URL": redis_url,
        "SLUICEGATE_REDIS_PREFIX": redis_prefix,
        "SLUICEGATE_REDIS_TIMEOUT_SECONDS": "2",
    }
    limits = [{"scope": "workspace", "usd": 1, "per": "day"}]
    first = gateway(tmp_path, database_url, upstream, limits, env)
    second = gateway(tmp_path, database_url, upstream, limits, env)
    with first, second:
        statuses = asyncio.run(
            ask_all([sdk(first, key), sdk(second, key)], 200, max_tokens=5)
        )
    spent = sum(row["cost_micros"] for row in ledger(database_url))
    assert set(statuses) == {200, 402}
    assert spent <= 1_000_000
    assert spent >= 900_000
    assert spent == statuses.count(200) * cost(9, 5)


def test_one_embedded_process_admits_racing_requests_within_the_budget(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    upstream.prompt_tokens = 9
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "usd": 0.4, "per": "month"}]
    with gateway(tmp_path, database_url, upstream, limits) as process:
        statuses = asyncio.run(ask_all([sdk(process, key)], 60, max_tokens=5))
    spent = sum(row["cost_micros"] for row in ledger(database_url))
    assert set(statuses) == {200, 402}
    assert 360_000 <= spent <= 400_000


def test_a_stream_is_charged_its_real_tokens(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    upstream.prompt_tokens, upstream.completion_tokens = 12, 7
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "api_key", "usd": 5, "per": "day"}]

    async def stream(process: GatewayProcess) -> list[Any]:
        async with sdk(process, key) as client:
            chunks = await client.chat.completions.create(
                model=PUBLIC_MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                max_tokens=50,
            )
            return [chunk async for chunk in chunks]

    with gateway(tmp_path, database_url, upstream, limits) as process:
        asyncio.run(stream(process))
    [row] = ledger(database_url)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 7)
    assert row["cost_micros"] == cost(12, 7)
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}


def test_a_client_that_did_not_ask_for_stream_usage_does_not_get_it(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "tokens": 10_000, "per": "day"}]

    async def stream(process: GatewayProcess) -> list[Any]:
        async with sdk(process, key) as client:
            chunks = await client.chat.completions.create(
                model=PUBLIC_MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            return [chunk async for chunk in chunks]

    with gateway(tmp_path, database_url, upstream, limits) as process:
        chunks = asyncio.run(stream(process))
    assert chunks
    assert all(chunk.choices for chunk in chunks)


def test_the_ledger_total_equals_the_priced_provider_usage(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "usd": 100, "per": "month"}]
    usages = [(10, 5), (123, 45), (1, 1), (999, 0), (37, 2048)]

    async def run(process: GatewayProcess) -> None:
        async with sdk(process, key) as client:
            for index, (prompt, completion) in enumerate(usages):
                upstream.prompt_tokens, upstream.completion_tokens = prompt, completion
                await ask(client, stream=index % 2 == 1)

    with gateway(tmp_path, database_url, upstream, limits) as process:
        asyncio.run(run(process))
    rows = ledger(database_url)
    assert len(rows) == len(usages)
    assert sum(row["cost_micros"] for row in rows) == sum(cost(p, c) for p, c in usages)


def test_a_request_without_a_cap_gets_the_default_cap_upstream(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "usd": 5, "per": "day"}]
    process = gateway(tmp_path, database_url, upstream, limits, default_max_tokens=321)
    with process:
        assert asyncio.run(ask_all([sdk(process, key)], 1)) == [200]
    assert upstream.requests[-1].json["max_completion_tokens"] == 321


def test_a_refusal_names_the_budget_the_spend_and_the_reset(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "tokens": 20, "per": "day"}]

    async def run(process: GatewayProcess) -> openai.APIStatusError:
        async with sdk(process, key) as client:
            await client.chat.completions.create(
                model=PUBLIC_MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=5,
            )
            await asyncio.to_thread(process.settle)
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model=PUBLIC_MODEL,
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=5,
                )
            return caught.value

    with gateway(tmp_path, database_url, upstream, limits) as process:
        error = asyncio.run(run(process))
    assert error.status_code == 402
    assert error.code == "budget_exceeded"
    assert "daily token budget of workspace 'acme' (20 tokens)" in error.message
    assert "spent 15 tokens" in error.message
    headers = error.response.headers
    assert headers["x-sluicegate-budget-limit"] == "20"
    assert headers["x-sluicegate-budget-spent"] == "15"
    assert headers["x-sluicegate-budget-reset"].endswith("T00:00:00Z")
    assert upstream.calls == 1


def test_a_model_without_a_price_is_refused_under_a_usd_budget(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    limits = [{"scope": "workspace", "usd": 5, "per": "day"}]

    async def run(process: GatewayProcess) -> openai.APIStatusError:
        async with sdk(process, key) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="other-model",
                    messages=MESSAGES,  # type: ignore[arg-type]
                )
            return caught.value

    with gateway(tmp_path, database_url, upstream, limits) as process:
        error = asyncio.run(run(process))
    assert error.status_code == 403
    assert "no price is known for mock/other" in error.message
    assert upstream.calls == 0


def test_redis_down_fails_closed_by_default(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    env = {"SLUICEGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    limits = [{"scope": "workspace", "usd": 5, "per": "day"}]
    with gateway(tmp_path, database_url, upstream, limits, env) as process:
        assert asyncio.run(ask_all([sdk(process, key)], 1)) == [503]
    assert upstream.calls == 0


def test_redis_down_with_fail_open_enforces_from_the_database(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    key = provision(database_url, ["acme"])["acme"]
    env = {"SLUICEGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    limits = [{"scope": "workspace", "tokens": 30, "per": "day"}]
    process = gateway(tmp_path, database_url, upstream, limits, env, on_failure="open")
    with process:
        statuses = [
            asyncio.run(ask_all([sdk(process, key)], 1, max_tokens=5))[0]
            for _ in range(3)
        ]
    assert statuses == [200, 200, 402]
    assert len(ledger(database_url)) == 2
