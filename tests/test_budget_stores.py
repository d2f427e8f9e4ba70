"""The budget stores on real services: the database (SQLite and PostgreSQL)
and Redis.  Both admit only what fits, settle into the ledger once, and let
holds that are never settled expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.ledger_writer import LedgerWriter, ledger_spool
from sluicegate.core.budgets.limits import BudgetLimit, Counter, counters
from sluicegate.core.budgets.redis_store import RedisBudgetStore
from sluicegate.core.budgets.sql_store import SqlBudgetStore
from sluicegate.core.budgets.store import BudgetStore, Claim
from sluicegate.core.context import Principal, Usage
from sluicegate.core.db.database import Database
from sluicegate.core.errors import InfrastructureError
from sluicegate.core.keys import create_key
from sluicegate.core.redis_guard import RedisGuard
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.throwaway import table_locked

pytestmark = pytest.mark.anyio

LIMIT = {"scope": "workspace", "tokens": 100, "per": "day"}


@pytest.fixture
async def principal(database: Database) -> Principal:
    workspace = await create_workspace(database, "acme")
    key, _ = await create_key(database, "acme", name="test")
    return Principal(workspace.id, "acme", key.id, key.prefix)


@pytest.fixture(params=["database", "redis"])
async def store(
    request: pytest.FixtureRequest, database: Database, tmp_path: Path
) -> AsyncIterator[BudgetStore]:
    writer = LedgerWriter(database, ledger_spool(tmp_path))
    if request.param == "database":
        yield SqlBudgetStore(database, writer)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = aioredis.Redis.from_url(url)
    try:
        guard = RedisGuard(client, prefix, timeout_seconds=2)
        yield RedisBudgetStore(guard, database, writer)
    finally:
        await client.aclose()


def counter(principal: Principal, **limit: object) -> Counter:
    budget = BudgetLimit.model_validate({**LIMIT, **limit})
    return counters([budget], principal, datetime.now(UTC), "UTC")[0]


def entry(request_id: str, principal: Principal, tokens: int) -> Entry:
    return Entry(
        request_id=request_id,
        workspace_id=principal.workspace_id,
        key_id=principal.key_id,
        model="test-model",
        target="mock/upstream-model",
        status=200,
        usage=Usage(tokens, 0, 0),
        cost_micros=tokens * 10,
        admitted_at=datetime.now(UTC),
    )


async def test_a_request_that_fits_is_admitted(
    store: BudgetStore, principal: Principal
) -> None:
    assert await store.reserve("r1", [Claim(counter(principal), 100)], 60) is None


async def test_a_request_that_does_not_fit_beside_holds_is_refused(
    store: BudgetStore, principal: Principal
) -> None:
    budget = counter(principal)
    await store.reserve("r1", [Claim(budget, 60)], 60)
    refusal = await store.reserve("r2", [Claim(budget, 41)], 60)
    assert refusal is not None
    assert (refusal.spent, refusal.reserved, refusal.wanted) == (0, 60, 41)


async def test_a_refusal_on_one_budget_reserves_on_none(
    store: BudgetStore, principal: Principal
) -> None:
    roomy = counter(principal, tokens=1000)
    tight = counter(principal, scope="api_key", tokens=10)
    assert await store.reserve("r1", [Claim(roomy, 50), Claim(tight, 50)], 60)
    assert await store.reserve("r2", [Claim(roomy, 1000)], 60) is None


async def test_settling_charges_the_real_use_and_frees_the_rest(
    store: BudgetStore, principal: Principal
) -> None:
    budget = counter(principal)
    await store.reserve("r1", [Claim(budget, 80)], 60)
    await store.settle("r1", [Claim(budget, 30)], entry("r1", principal, 30))
    assert await store.reserve("r2", [Claim(budget, 70)], 60) is None
    refusal = await store.reserve("r3", [Claim(budget, 1)], 60)
    assert refusal is not None and refusal.spent == 30


async def test_a_settled_request_is_in_the_ledger_once(
    store: BudgetStore, principal: Principal, database: Database
) -> None:
    budget = counter(principal)
    await store.reserve("r1", [Claim(budget, 80)], 60)
    await store.settle("r1", [Claim(budget, 30)], entry("r1", principal, 30))
    await ledger.record(database, entry("r1", principal, 30))
    assert await ledger.spent(database, budget) == 30


async def test_a_hold_that_is_never_settled_expires(
    store: BudgetStore, principal: Principal
) -> None:
    budget = counter(principal)
    await store.reserve("crashed", [Claim(budget, 100)], 0.05)
    await asyncio.sleep(0.1)
    assert await store.reserve("r2", [Claim(budget, 100)], 60) is None


async def test_a_released_request_frees_its_whole_hold(
    store: BudgetStore, principal: Principal
) -> None:
    budget = counter(principal)
    await store.reserve("r1", [Claim(budget, 100)], 60)
    await store.settle("r1", [Claim(budget, 0)], None)
    assert await store.reserve("r2", [Claim(budget, 100)], 60) is None


async def test_redis_counters_are_rebuilt_from_the_ledger(
    database: Database,
    principal: Principal,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    budget = counter(principal)
    await ledger.record(database, entry("earlier", principal, 90))
    client = aioredis.Redis.from_url(redis_url)
    try:
        writer = LedgerWriter(database, ledger_spool(tmp_path))
        store = RedisBudgetStore(RedisGuard(client, redis_prefix), database, writer)
        refusal = await store.reserve("r1", [Claim(budget, 11)], 60)
        assert refusal is not None and refusal.spent == 90
        lost = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        await client.delete(*lost)
        refusal = await store.reserve("r2", [Claim(budget, 11)], 60)
        assert refusal is not None and refusal.spent == 90
    finally:
        await client.aclose()


async def test_many_racing_requests_never_overfill_a_budget(
    store: BudgetStore, principal: Principal
) -> None:
    budget = counter(principal)
    results = await asyncio.gather(
        *(store.reserve(f"r{i}", [Claim(budget, 7)], 60) for i in range(40))
    )
    assert sum(result is None for result in results) == 100 // 7


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_settlement_the_database_refuses_keeps_its_ledger_row(
    database: Database, database_url: str, principal: Principal, tmp_path: Path
) -> None:
    """The ledger locked past the lock timeout fails the settlement; its row
    goes to the ledger writer and is written once the lock is gone."""
    writer = LedgerWriter(
        database, ledger_spool(tmp_path), timeout_seconds=0.2, retry_seconds=0.1
    )
    store = SqlBudgetStore(database, writer)
    budget = counter(principal)
    assert await store.reserve("r1", [Claim(budget, 10)], 60) is None

    with table_locked(database_url, "usage"):
        with pytest.raises(InfrastructureError):
            await store.settle("r1", [Claim(budget, 7)], entry("r1", principal, 7))
        assert [row.request_id for row in writer.waiting] == ["r1"]

    for _ in range(100):
        if not writer.waiting:
            break
        await asyncio.sleep(0.1)
    await writer.close()
    assert await ledger.spent(database, budget) == 7
    assert await store.reserved(budget) == 10  # the hold waits for its expiry
