"""Property: no sequence of admissions, settlements, crashes (holds that are
never settled and expire) and lost Redis counters overspends a budget or
leaves a hold behind, on the Redis store and on the database store (real
Redis, real SQLite)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.budgets.ledger_writer import LedgerWriter, ledger_spool
from sluicegate.core.budgets.limits import BudgetLimit, Counter, counters
from sluicegate.core.budgets.redis_store import RedisBudgetStore
from sluicegate.core.budgets.sql_store import SqlBudgetStore
from sluicegate.core.budgets.store import BudgetStore, Claim
from sluicegate.core.context import Principal, Usage
from sluicegate.core.db.database import Database
from sluicegate.core.redis_guard import RedisGuard
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.databases import run_async

LIMIT = 100
SERIALS = itertools.count()
"""A number per example: its workspace and Redis prefix are its own."""

ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(1, 60), st.integers(0, 100)),
        st.tuples(st.just("settle"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("crash"), st.integers(1, 60), st.just(0)),
        st.tuples(st.just("lose_counters"), st.just(0), st.just(0)),
    ),
    max_size=25,
)
"""(op, amount or which in-flight request, percent of the hold really used)."""


class Scenario:
    """One example: a fresh workspace, a fresh Redis prefix, a store."""

    def __init__(self, store: BudgetStore, database: Database, counter: Counter):
        self.store = store
        self.database = database
        self.counter = counter
        self.in_flight: dict[str, int] = {}
        self.ids = (f"r{n}" for n in itertools.count())

    async def admit(self, amount: int, percent: int) -> None:
        request_id = next(self.ids)
        refusal = await self.store.reserve(
            request_id, [Claim(self.counter, amount)], 60
        )
        if refusal is None:
            self.in_flight[request_id] = amount * percent // 100

    async def settle(self, which: int) -> None:
        if not self.in_flight:
            return
        request_id = sorted(self.in_flight)[which % len(self.in_flight)]
        used = self.in_flight.pop(request_id)
        await self.store.settle(
            request_id, [Claim(self.counter, used)], self.entry(request_id, used)
        )

    async def crash(self, amount: int) -> None:
        await self.store.reserve(next(self.ids), [Claim(self.counter, amount)], 0.001)
        await asyncio.sleep(0.005)

    async def lose_counters(self) -> None:
        """Redis forgets the counters (only between requests: holds of
        requests in flight are not in the ledger and would be lost too)."""
        if self.in_flight or not isinstance(self.store, RedisBudgetStore):
            return
        client = self.store.guard.client
        keys = [key async for key in client.scan_iter(f"{self.store.guard.prefix}*")]
        if keys:
            await client.delete(*keys)

    def entry(self, request_id: str, tokens: int) -> Entry:
        return Entry(
            request_id=f"{self.counter.scope_id}-{request_id}",
            workspace_id=self.counter.scope_id,
            key_id=None,
            model="m",
            target="p/m",
            status=200,
            usage=Usage(tokens, 0, 0),
            cost_micros=0,
            admitted_at=datetime.now(UTC),
        )


async def nothing_held(store: BudgetStore, counter: Counter, unspent: int) -> bool:
    """Whether, with every request settled or expired, exactly the unspent
    budget can still be reserved: no hold leaked, none was forgotten early."""
    over = await store.reserve("probe-over", [Claim(counter, unspent + 1)], 60)
    if over is None:
        return False
    if unspent == 0:
        return True
    return await store.reserve("probe", [Claim(counter, unspent)], 60) is None


async def play(
    kind: str,
    database_url: str,
    redis_url: str,
    steps: list[Any],
    serial: int,
    spool_directory: Path,
) -> None:
    database = await Database.connect(database_url)
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"sgprop-{serial}-{id(steps)}"
    try:
        workspace = await create_workspace(database, f"w{serial}")
        principal = Principal(workspace.id, workspace.name, None)
        limit = BudgetLimit(scope="workspace", tokens=LIMIT, per="day")
        [counter] = counters([limit], principal, datetime.now(UTC), "UTC")
        writer = LedgerWriter(database, ledger_spool(spool_directory))
        store: BudgetStore = SqlBudgetStore(database, writer)
        if kind == "redis":
            guard = RedisGuard(client, prefix, timeout_seconds=2)
            store = RedisBudgetStore(guard, database, writer)
        scenario = Scenario(store, database, counter)
        for op, amount, percent in steps:
            await _step(scenario, op, amount, percent)
            assert await ledger.spent(database, counter) <= LIMIT
        while scenario.in_flight:
            await scenario.settle(0)
        spent = await ledger.spent(database, counter)
        assert spent <= LIMIT
        assert await nothing_held(store, counter, LIMIT - spent)
    finally:
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await database.close()


async def _step(scenario: Scenario, op: str, amount: int, percent: int) -> None:
    if op == "admit":
        await scenario.admit(amount, percent)
    elif op == "settle":
        await scenario.settle(amount)
    elif op == "crash":
        await scenario.crash(amount)
    else:
        await scenario.lose_counters()


@pytest.fixture(scope="module")
def property_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("budget-property") / "ledger.db"
    url = f"sqlite:///{path}"

    async def migrate() -> None:
        database = await Database.connect(url)
        try:
            await database.migrate()
        finally:
            await database.close()

    run_async(migrate)
    return url


@pytest.fixture(scope="module")
def property_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("budget-property-spool")


@pytest.mark.parametrize("kind", ["redis", "database"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=ops)
def test_no_sequence_of_operations_overspends(
    kind: str,
    property_database: str,
    property_spool: Path,
    redis_url: str,
    steps: list[Any],
) -> None:
    serial = next(SERIALS)
    scenario = play(kind, property_database, redis_url, steps, serial, property_spool)
    asyncio.run(scenario)
