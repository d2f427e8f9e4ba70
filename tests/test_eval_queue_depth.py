"""The evaluation backlog the /metrics gauge reports: jobs not yet delivered
plus those delivered but not finished, from a real Redis stream."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from sluicegate.core.evals.queue import group_name, stream_name, waiting_jobs
from sluicegate.core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_the_backlog_counts_undelivered_and_unfinished_jobs(
    redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(redis_url=redis_url, redis_prefix=redis_prefix)
    client = aioredis.Redis.from_url(redis_url)
    stream, group = stream_name(settings), group_name(settings)
    try:
        assert await waiting_jobs(client, settings) == 0  # no stream yet
        for index in range(3):
            await client.xadd(stream, {"job": str(index)})
        assert await waiting_jobs(client, settings) == 3  # no worker read it
        await client.xgroup_create(stream, group, id="0")
        delivered = await client.xreadgroup(group, "w1", {stream: ">"}, count=2)
        assert await waiting_jobs(client, settings) == 3  # 1 waiting + 2 pending
        first_id = delivered[0][1][0][0]
        await client.xack(stream, group, first_id)
        assert await waiting_jobs(client, settings) == 2  # acked entries stay
    finally:
        await client.aclose()
