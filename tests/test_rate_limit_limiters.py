"""The limiter semantics, the same tests against Redis and the in-process one.

Windows are sliding logs: exact for every window ending at any moment; all
checks of a request are admitted together or not at all; tokens are settled
to real usage; concurrency slots are released, or lapse with their lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from sluicegate.core.limits.memory_limiter import MemoryLimiter
from sluicegate.core.limits.redis_limiter import RedisLimiter
from sluicegate.core.limits.spec import MICROS, Check, Limiter, Unit
from sluicegate.core.redis_guard import RedisGuard

pytestmark = pytest.mark.anyio

MINUTE = 60


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisLimiter(RedisGuard(client, prefix, timeout_seconds=2.0))
    finally:
        await client.aclose()


@pytest.fixture
def keys(request: pytest.FixtureRequest) -> str:
    """A key head of this test, under the Redis test prefix when there is one."""
    if "redis_prefix" in request.fixturenames:
        return str(request.getfixturevalue("redis_prefix")) + ":{ws:1}"
    return "memory:{ws:1}"


def check(
    key: str, unit: Unit, limit: int, seconds: float = MINUTE, weight: int = 1
) -> Check:
    return Check(key, unit, limit, int(seconds * MICROS), weight, "workspace", "acme")


async def test_a_window_admits_exactly_its_limit(limiter: Limiter, keys: str) -> None:
    rule = check(f"{keys}:req", "requests", 5)
    verdicts = [await limiter.admit(f"r{n}", [rule]) for n in range(7)]
    assert [v.admitted for v in verdicts] == [True] * 5 + [False] * 2
    assert [v.standings[0].remaining for v in verdicts] == [4, 3, 2, 1, 0, 0, 0]


async def test_a_denial_records_nothing_under_any_limit(
    limiter: Limiter, keys: str
) -> None:
    workspace = check(f"{keys}:ws", "requests", 10)
    first_key = check(f"{keys}:key1", "requests", 2)
    other_key = check(f"{keys}:key2", "requests", 2)
    for n in range(4):
        await limiter.admit(f"a{n}", [workspace, first_key])
    verdict = await limiter.admit("b", [workspace, other_key])
    assert verdict.admitted
    assert verdict.standings[0].remaining == 7


async def test_a_denied_request_learns_when_the_oldest_entry_leaves(
    limiter: Limiter, keys: str
) -> None:
    rule = check(f"{keys}:req", "requests", 2, seconds=30)
    await limiter.admit("a", [rule])
    await limiter.admit("b", [rule])
    denied = (await limiter.admit("c", [rule])).standings[0]
    assert denied.denied
    assert 0 < denied.retry_us <= 30 * MICROS
    assert 0 < denied.reset_us <= 30 * MICROS


async def test_the_window_slides_so_old_entries_free_room(
    limiter: Limiter, keys: str
) -> None:
    rule = check(f"{keys}:req", "requests", 2, seconds=0.5)
    await limiter.admit("a", [rule])
    await limiter.admit("b", [rule])
    assert not (await limiter.admit("c", [rule])).admitted
    await anyio.sleep(0.6)
    assert (await limiter.admit("d", [rule])).admitted


async def test_tokens_admit_a_weight_only_while_it_fits(
    limiter: Limiter, keys: str
) -> None:
    key = f"{keys}:tok"
    assert (await limiter.admit("a", [check(key, "tokens", 100, weight=70)])).admitted
    refused = await limiter.admit("b", [check(key, "tokens", 100, weight=40)])
    admitted = await limiter.admit("c", [check(key, "tokens", 100, weight=30)])
    assert not refused.admitted
    assert refused.standings[0].remaining == 30
    assert admitted.admitted
    assert admitted.standings[0].remaining == 0


async def test_a_request_heavier_than_the_limit_waits_a_whole_window(
    limiter: Limiter, keys: str
) -> None:
    heavy = check(f"{keys}:tok", "tokens", 100, seconds=20, weight=101)
    standing = (await limiter.admit("a", [heavy])).standings[0]
    assert standing.denied
    assert standing.retry_us == 20 * MICROS


async def test_settling_replaces_the_estimate_by_real_usage(
    limiter: Limiter, keys: str
) -> None:
    key = f"{keys}:tok"
    estimated = check(key, "tokens", 100, weight=80)
    await limiter.admit("a", [estimated])
    await limiter.settle("a", [estimated], 15)
    verdict = await limiter.admit("b", [check(key, "tokens", 100, weight=85)])
    assert verdict.admitted
    assert verdict.standings[0].remaining == 0


async def test_settling_without_usage_keeps_the_estimate(
    limiter: Limiter, keys: str
) -> None:
    key = f"{keys}:tok"
    estimated = check(key, "tokens", 100, weight=80)
    await limiter.admit("a", [estimated])
    await limiter.settle("a", [estimated], None)
    verdict = await limiter.admit("b", [check(key, "tokens", 100, weight=21)])
    assert not verdict.admitted
    assert verdict.standings[0].remaining == 20


async def test_concurrency_admits_the_limit_in_flight_and_frees_on_settle(
    limiter: Limiter, keys: str
) -> None:
    slots = check(f"{keys}:conc", "concurrent", 2, seconds=600)
    assert (await limiter.admit("a", [slots])).admitted
    assert (await limiter.admit("b", [slots])).admitted
    assert not (await limiter.admit("c", [slots])).admitted
    await limiter.settle("a", [slots], None)
    assert (await limiter.admit("d", [slots])).admitted
    assert not (await limiter.admit("e", [slots])).admitted


async def test_a_concurrency_slot_lapses_with_its_lease(
    limiter: Limiter, keys: str
) -> None:
    slots = check(f"{keys}:conc", "concurrent", 1, seconds=0.3)
    assert (await limiter.admit("crashed", [slots])).admitted
    assert not (await limiter.admit("b", [slots])).admitted
    await anyio.sleep(0.4)
    assert (await limiter.admit("c", [slots])).admitted


async def test_a_concurrency_denial_holds_no_window_entry(
    limiter: Limiter, keys: str
) -> None:
    window = check(f"{keys}:req", "requests", 2)
    slots = check(f"{keys}:conc", "concurrent", 1, seconds=600)
    await limiter.admit("a", [window, slots])
    assert not (await limiter.admit("b", [window, slots])).admitted
    await limiter.settle("a", [window, slots], None)
    verdict = await limiter.admit("c", [window, slots])
    assert verdict.admitted
    assert verdict.standings[0].remaining == 0
