"""A Redis server paused (SIGSTOP) while requests flow, then resumed (SIGCONT).

A paused server is the hardest Redis outage to notice: connections stay open
and nothing answers, so only timeouts tell, and every command sent meanwhile
runs when it resumes.  The gateway runs the full pipeline on PostgreSQL and on
a redis-server of its own (``tests/fixtures/throwaway.py``); the degraded
modes are those of DESIGN §5: rate limits fail open, budgets fail closed.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fault_checks import (
    COST_PER_REQUEST,
    NOTHING_LEFT,
    Sent,
    chain_verifies,
    client,
    fail_open_admissions,
    full_gateway,
    ledger_ids,
    ledger_spend,
    records_of,
    redis_env,
    send,
    send_many,
    served_ids,
    settled_leftovers,
    slowest,
    statuses,
    upstream_reached,
    wait_for_redis,
)
from tests.fixtures.gateway import GatewayProcess, provision
from tests.fixtures.throwaway import FaultFigures, RedisServer

pytestmark = pytest.mark.postgres

BEFORE, IN_FLIGHT, DURING, AFTER = 6, 3, 10, 6
SENT = BEFORE + IN_FLIGHT + DURING + AFTER
SERVED = BEFORE + IN_FLIGHT + AFTER
SLOW_SECONDS = 2.5
"""How long the upstream holds the requests in flight when Redis stops: they
end while the gateway's Redis breaker is open, so their settlements never
reach Redis."""
BOUND_SECONDS = 8.0
"""No request may take this long: two Redis timeouts of 1 s plus the slow
upstream's 2.5 s, with room for a loaded machine."""


async def _through_a_pause(
    process: GatewayProcess, key: str, upstream: FakeUpstream, redis: RedisServer
) -> list[Sent]:
    """Requests before, across and during a pause, and after it ends."""
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        upstream.script([Reply(delay=SLOW_SECONDS)] * IN_FLIGHT)
        try:
            async with anyio.create_task_group() as group:
                for _ in range(IN_FLIGHT):
                    group.start_soon(_append, http, sent)
                await upstream_reached(upstream, BEFORE + IN_FLIGHT)
                redis.pause()
                sent += await send_many(http, DURING)
        finally:
            redis.resume()
        await anyio.to_thread.run_sync(wait_for_redis, process)
        return sent + await send_many(http, AFTER)


async def _append(http: httpx.AsyncClient, sent: list[Sent]) -> None:
    sent.append(await send(http))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_paused_redis_degrades_as_designed_and_leaves_nothing_behind(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    throwaway_redis: RedisServer,
    fault_figures: FaultFigures,
) -> None:
    """25 requests: 6 before the pause, 3 in flight at the upstream when Redis
    stops, a burst of 10 while it is stopped, 6 after it resumes.

    Must hold:

    * no request takes 8 s or more;
    * the 10 of the burst: rate_limit fails open for each of them (the
      ``rate_limit`` stage's fail-open counter in /metrics is exactly 10) and
      budget fails closed: 10 answers 503 ``service_unavailable``;
    * the other 15 answer 200;
    * 25 audit records, one per request id, whatever its fate;
    * the ledger holds exactly the 15 served request ids and 15 x 20,000
      micro-USD, the priced usage the provider reported;
    * once the requests after the pause ran, Redis holds no budget hold,
      nothing reserved and no concurrency slot (the 3 requests in flight
      could not settle on Redis; their holds and slots are released then,
      not after the 660 s hold or the 900 s lease);
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    env = redis_env(throwaway_redis.url)
    with full_gateway(tmp_path, database_url, upstream, env) as process:
        sent = anyio.run(_through_a_pause, process, key, upstream, throwaway_redis)
        records = records_of(database_url, sent)
        fault_figures.add(
            "redis paused (SIGSTOP)",
            injected=1,
            sent=len(sent),
            lost=len({one.request_id for one in sent} - set(records)),
        )

        assert slowest(sent) < BOUND_SECONDS, sent
        assert fail_open_admissions(process, "rate_limit") == DURING
        assert (
            statuses(sent)
            == [(200, None)] * SERVED + [(503, "service_unavailable")] * DURING
        )
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert ledger_ids(database_url) == served_ids(sent)
        assert ledger_spend(database_url) == SERVED * COST_PER_REQUEST
        assert settled_leftovers(throwaway_redis.url, "sluicegate") == NOTHING_LEFT
    assert chain_verifies(database_url) == ""
