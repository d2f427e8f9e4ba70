"""Redis killed, and PostgreSQL stopped, while requests flow through the full
pipeline; and what must hold once each is back.

Both tests hold a few streams at the upstream when the fault strikes, send a
burst while it lasts, let the streams end inside it, then send more requests
once the service is back.  The degraded modes are those of DESIGN §5:

* Redis killed (SIGKILL) and started again, empty, on the same port: rate
  limits fail open to the per-process limiter, budgets fail closed with 503;
* PostgreSQL stopped and started again: audit records and ledger rows go to
  the local spool (``core/spool.py``) and are written when it answers, by the
  same gateway or, if it stopped meanwhile, by the next one to start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import httpx
import pytest
import redis

from sluicegate.core.audit.writer import COMMIT_TIMEOUT_SECONDS as COMMIT_TIMEOUT
from sluicegate.core.budgets.sql_store import STORE_TIMEOUT_SECONDS
from sluicegate.core.keys import LOOKUP_TIMEOUT_SECONDS
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fault_checks import (
    COST_PER_REQUEST,
    NOTHING_LEFT,
    Sent,
    chain_verifies,
    client,
    drained_spool,
    fail_open_admissions,
    full_gateway,
    ledger_ids,
    ledger_spend,
    records_of,
    redis_env,
    send,
    send_many,
    served_ids,
    settled_ledger_ids,
    settled_leftovers,
    slowest,
    statuses,
    upstream_reached,
    wait_for_redis,
    wait_for_spooled,
)
from tests.fixtures.gateway import GatewayProcess, provision
from tests.fixtures.throwaway import Cluster, FaultFigures, RedisServer
from tests.test_audit_gateway import audit_rows

pytestmark = pytest.mark.postgres

BEFORE, IN_FLIGHT, DURING, AFTER = 4, 3, 8, 4
"""Requests before the fault, streams held at the upstream when it strikes,
a burst while it lasts, and requests once the service is back."""
SENT = BEFORE + IN_FLIGHT + DURING + AFTER
BOUND_SECONDS = 8.0
"""No request may take this long.  A held stream lasts as long as the fault
takes to inject plus the burst; a request of the burst at most two Redis
timeouts of 1 s."""


# -- the load around a fault ---------------------------------------------------


async def _across(
    http: httpx.AsyncClient, upstream: FakeUpstream, fault: Callable[[], None]
) -> list[Sent]:
    """IN_FLIGHT streams held at the upstream while ``fault`` strikes, and a
    burst of DURING requests after it; the streams end once the burst has."""
    sent: list[Sent] = []
    release = threading.Event()
    upstream.script([Reply(hold=release)] * IN_FLIGHT)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(IN_FLIGHT):
                group.start_soon(_append_stream, http, sent)
            await upstream_reached(upstream, BEFORE + IN_FLIGHT)
            await anyio.to_thread.run_sync(fault)
            sent += await send_many(http, DURING)
            release.set()
    finally:
        release.set()
    return sent


async def _append_stream(http: httpx.AsyncClient, sent: list[Sent]) -> None:
    sent.append(await send(http, stream=True))


async def _through_a_kill(
    process: GatewayProcess, key: str, upstream: FakeUpstream, server: RedisServer
) -> list[Sent]:
    """Requests before a kill of Redis, across it and while it is dead, and
    after it is started again.

    Redis starts again only once every after step of the requests so far has
    run, so the held streams settled while it was dead.
    """
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        sent += await _across(http, upstream, server.kill)
        await anyio.to_thread.run_sync(process.settle)

        await anyio.to_thread.run_sync(server.start)
        await anyio.to_thread.run_sync(wait_for_redis, process)
        return sent + await send_many(http, AFTER)


async def _through_a_stop(
    process: GatewayProcess,
    key: str,
    upstream: FakeUpstream,
    cluster: Cluster,
    workdir: Path,
) -> tuple[list[Sent], int]:
    """Requests before PostgreSQL stops, across the stop and while it is down,
    and after it is started again; also the records spooled while it was down.

    It stops once the records of the requests before are committed, and starts
    again once every after step of the requests so far has run.
    """
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(records_of, cluster.url, sent)

        sent += await _across(http, upstream, cluster.stop)
        await anyio.to_thread.run_sync(process.settle)
        held = await anyio.to_thread.run_sync(
            wait_for_spooled, workdir, IN_FLIGHT + DURING
        )

        await anyio.to_thread.run_sync(cluster.start)
        return sent + await send_many(http, AFTER), held


# -- services ------------------------------------------------------------------


def budget_spent(redis_url: str, prefix: str) -> int:
    """The ``spent`` of every budget counter under ``prefix``, summed."""
    connection = redis.Redis.from_url(redis_url)
    try:
        return sum(
            int(connection.hget(key, "spent") or 0)
            for key in connection.scan_iter(match=f"{prefix}:budget:*")
            if connection.type(key) == b"hash"
        )
    finally:
        connection.close()


def lost(sent: list[Sent], records: Mapping[str, object]) -> int:
    """Requests sent that have no audit record."""
    return len({one.request_id for one in sent} - set(records))


# -- the tests -----------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_killed_redis_degrades_as_designed_and_budgets_recover_from_the_ledger(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    throwaway_redis: RedisServer,
    fault_figures: FaultFigures,
) -> None:
    """19 requests: 4 before the kill, 3 streams held at the upstream when
    Redis is killed (they end while it is dead), a burst of 8 while it is
    dead, 4 once it runs again.

    Must hold:

    * no request takes 8 s or more;
    * the 8 of the burst: rate_limit fails open for each of them (its
      fail-open counter in /metrics is exactly 8) and budget fails closed:
      8 answers 503 ``service_unavailable``;
    * the other 11 answer 200;
    * 19 audit records, one per request id, whatever its fate;
    * the ledger holds exactly the 11 served request ids and 11 x 20,000
      micro-USD, the priced usage the provider reported;
    * Redis started again with none of its data (no persistence), so the
      holds and slots of the held streams died with it and "no leak" means:
      once the requests after the restart ran, Redis holds no budget hold,
      nothing reserved and no concurrency slot, and the budget counter,
      rebuilt from the ledger, has spent exactly what the ledger holds
      (the held streams' settlements, which missed Redis, included);
    * ``sluicegate audit verify`` exits 0.
    """
    served = BEFORE + IN_FLIGHT + AFTER
    key = provision(database_url, ["acme"])["acme"]
    env = redis_env(throwaway_redis.url)
    with full_gateway(tmp_path, database_url, upstream, env) as process:
        sent = anyio.run(_through_a_kill, process, key, upstream, throwaway_redis)
        records = records_of(database_url, sent)
        fault_figures.add(
            "redis killed (SIGKILL)",
            injected=1,
            sent=len(sent),
            lost=lost(sent, records),
        )

        assert slowest(sent) < BOUND_SECONDS, sent
        assert fail_open_admissions(process, "rate_limit") == DURING
        assert (
            statuses(sent)
            == [(200, None)] * served + [(503, "service_unavailable")] * DURING
        )
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert ledger_ids(database_url) == served_ids(sent)
        assert ledger_spend(database_url) == served * COST_PER_REQUEST
        assert settled_leftovers(throwaway_redis.url, "sluicegate") == NOTHING_LEFT
        assert budget_spent(throwaway_redis.url, "sluicegate") == ledger_spend(
            database_url
        )
    assert chain_verifies(database_url) == ""


@pytest.mark.redis
def test_an_unreachable_database_spools_the_records_and_loses_no_ledger_row(
    tmp_path: Path,
    cluster: Cluster,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """19 requests: 4 before PostgreSQL stops, 3 streams held at the upstream
    when it stops (they end while it is down), a burst of 8 while it is down,
    4 once it runs again.  API keys stay trusted from the gateway's cache.

    Must hold:

    * all 19 answer 200, none in 8 s or more: no stage waits for the database
      (rate_limit never fails open, Redis answered throughout);
    * while the database is down, the spool holds exactly the 11 records of
      the requests that ended then;
    * once it is back: the spool is empty and there are 19 audit records, one
      per request id, none lost and none doubled;
    * the ledger holds exactly the 19 request ids and 19 x 20,000 micro-USD,
      and no ledger row is left in the spool;
    * no budget hold and no concurrency slot is left in Redis, and the budget
      counter has spent exactly what the ledger holds;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(cluster.url, ["acme"])["acme"]
    env = redis_env(redis_url, redis_prefix)
    with full_gateway(tmp_path, cluster.url, upstream, env) as process:
        sent, held = anyio.run(
            _through_a_stop, process, key, upstream, cluster, tmp_path
        )
        records = records_of(cluster.url, sent)
        fault_figures.add(
            "postgres unreachable (server stopped)",
            injected=1,
            sent=len(sent),
            lost=lost(sent, records),
        )

        assert slowest(sent) < BOUND_SECONDS, sent
        assert statuses(sent) == [(200, None)] * SENT
        assert fail_open_admissions(process, "rate_limit") == 0
        assert held == IN_FLIGHT + DURING
        assert drained_spool(tmp_path) == 0
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert len(audit_rows(cluster.url)) == SENT
        assert settled_ledger_ids(cluster.url, SENT) == served_ids(sent)
        assert ledger_spend(cluster.url) == SENT * COST_PER_REQUEST
        assert drained_spool(tmp_path, "ledger") == 0
        assert settled_leftovers(redis_url, redis_prefix) == NOTHING_LEFT
        assert budget_spent(redis_url, redis_prefix) == ledger_spend(cluster.url)
    assert chain_verifies(cluster.url) == ""


@pytest.mark.redis
def test_a_gateway_stopped_while_the_database_is_down_hands_its_rows_to_the_next(
    tmp_path: Path,
    cluster: Cluster,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """4 requests, then PostgreSQL stops; 8 more answered while it is down;
    the gateway is stopped before it comes back.  Then PostgreSQL starts, and
    so does a new gateway on the same spool directory.

    Must hold:

    * all 12 answer 200;
    * the first gateway leaves the 8 audit records and the 8 ledger rows of
      the requests it served while the database was down in its spool files;
    * the second gateway adopts those files: the ledger then holds exactly
      the 12 request ids and 12 x 20,000 micro-USD, there are 12 audit
      records, and both spools are empty;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(cluster.url, ["acme"])["acme"]
    env = redis_env(redis_url, redis_prefix)
    with full_gateway(tmp_path, cluster.url, upstream, env) as first:
        sent = anyio.run(_before_and_during_a_stop, first, key, cluster)
        left = {
            kind: wait_for_spooled(tmp_path, DURING, kind)
            for kind in ("audit", "ledger")
        }
    cluster.start()

    with full_gateway(tmp_path, cluster.url, upstream, env):
        spend = COST_PER_REQUEST * len(sent)
        ids = settled_ledger_ids(cluster.url, len(sent))
        records = records_of(cluster.url, sent)
        fault_figures.add(
            "gateway stopped while postgres is down",
            injected=2,
            sent=len(sent),
            lost=lost(sent, records) + len(set(served_ids(sent)) - set(ids)),
        )

        assert statuses(sent) == [(200, None)] * len(sent)
        assert left == {"audit": DURING, "ledger": DURING}
        assert ids == served_ids(sent)
        assert ledger_spend(cluster.url) == spend
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert drained_spool(tmp_path, "ledger") == 0
        assert drained_spool(tmp_path) == 0
    assert chain_verifies(cluster.url) == ""


async def _before_and_during_a_stop(
    process: GatewayProcess, key: str, cluster: Cluster
) -> list[Sent]:
    """Requests before PostgreSQL stops (committed first), then a burst while
    it is down, whose after steps have all run when this returns."""
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(records_of, cluster.url, sent)
        await anyio.to_thread.run_sync(cluster.stop)
        sent += await send_many(http, DURING)
        await anyio.to_thread.run_sync(process.settle)
        return sent


@pytest.mark.redis
def test_a_paused_database_holds_up_no_request_and_loses_no_row(
    tmp_path: Path,
    cluster: Cluster,
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """16 requests: 4 before PostgreSQL is paused (SIGSTOP: connections stay
    open, nothing answers), 8 while it is paused, 4 once it runs again.  API
    keys stay trusted from the gateway's cache.

    Must hold:

    * all 16 answer 200, none in 8 s or more: no stage waits for the
      database;
    * while it is paused, the audit writer and the ledger writer give up on
      it and spool the 8 records and the 8 rows, and ``/readyz`` answers 503
      with the database ``down``;
    * once it runs again: 16 audit records, the ledger holds exactly the 16
      request ids and 16 x 20,000 micro-USD, both spools are empty, no hold
      or slot is left in Redis, and the chain verifies.
    """
    key = provision(cluster.url, ["acme"])["acme"]
    env = redis_env(redis_url, redis_prefix)
    with full_gateway(tmp_path, cluster.url, upstream, env) as process:
        sent, left = anyio.run(_through_a_pause, process, key, cluster, tmp_path)
        records = records_of(cluster.url, sent)
        fault_figures.add(
            "postgres paused (SIGSTOP)",
            injected=1,
            sent=len(sent),
            lost=lost(sent, records),
        )

        assert slowest(sent) < BOUND_SECONDS, sent
        assert statuses(sent) == [(200, None)] * len(sent)
        assert left == {
            "audit": DURING,
            "ledger": DURING,
            "readyz": 503,
            "readyz database": "down",
        }
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert settled_ledger_ids(cluster.url, len(sent)) == served_ids(sent)
        assert ledger_spend(cluster.url) == len(sent) * COST_PER_REQUEST
        assert drained_spool(tmp_path) == 0
        assert drained_spool(tmp_path, "ledger") == 0
        assert settled_leftovers(redis_url, redis_prefix) == NOTHING_LEFT
    assert chain_verifies(cluster.url) == ""


async def _through_a_pause(
    process: GatewayProcess, key: str, cluster: Cluster, workdir: Path
) -> tuple[list[Sent], dict[str, int | str]]:
    """Requests before PostgreSQL is paused (committed first), a burst while
    it is paused, and more once it runs again; also what was spooled and what
    ``/readyz`` said while it was paused."""
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(records_of, cluster.url, sent)
        await anyio.to_thread.run_sync(process.settle)

        cluster.pause()
        try:
            sent += await send_many(http, DURING)
            ready = await http.get("/readyz")
            left: dict[str, int | str] = {
                kind: await anyio.to_thread.run_sync(
                    wait_for_spooled, workdir, DURING, kind
                )
                for kind in ("audit", "ledger")
            }
        finally:
            cluster.resume()
        left["readyz"] = ready.status_code
        left["readyz database"] = ready.json()["checks"]["database"]["status"]
        return sent + await send_many(http, AFTER), left


HANGING = {
    "key lookup": (
        {"SLUICEGATE_KEY_CACHE_SECONDS": "0"},
        LOOKUP_TIMEOUT_SECONDS + 3,
        False,
    ),
    "database budget": ({}, STORE_TIMEOUT_SECONDS + 2 * COMMIT_TIMEOUT + 3, True),
}
"""What waits for a paused database on the request path without Redis: the
environment that makes it wait, the bound on a refused request, and whether
refused requests reach the pipeline (and so have audit records).  A refusal
inside the pipeline is answered once its audit after step has run, and the
audit writer gives up on a commit after COMMIT_TIMEOUT; a record that arrives
while it waits waits for one more such try."""


@pytest.mark.parametrize("waiting", sorted(HANGING))
def test_a_paused_database_refuses_what_needs_it_within_a_deadline(
    tmp_path: Path,
    cluster: Cluster,
    upstream: FakeUpstream,
    waiting: str,
    fault_figures: FaultFigures,
) -> None:
    """12 requests to a gateway with no Redis: 4 before PostgreSQL is paused,
    4 at once while it is paused, 4 once it runs again.  Either keys are not
    cached (each request looks its key up) or budgets live in the database.

    Must hold:

    * the 4 during the pause answer 503 ``service_unavailable`` within the
      bound of :data:`HANGING`, and never reach the upstream;
    * the 8 others answer 200 and the ledger holds exactly their ids;
    * every request that reached the pipeline has its audit record (a key
      that cannot be checked is refused before it), and the chain verifies.
    """
    env, bound, audited = HANGING[waiting]
    key = provision(cluster.url, ["acme"])["acme"]
    with full_gateway(tmp_path, cluster.url, upstream, env) as process:
        before, during, after = anyio.run(_around_a_pause, process, key, cluster)
        served = before + after
        expected = before + during + after if audited else served
        records = records_of(cluster.url, expected)
        fault_figures.add(
            f"postgres paused, no redis: {waiting}",
            injected=1,
            sent=len(before + during + after),
            lost=lost(expected, records),
        )

        assert statuses(during) == [(503, "service_unavailable")] * len(during)
        assert slowest(during) < bound
        assert statuses(served) == [(200, None)] * len(served)
        assert upstream.calls == len(served)
        assert settled_ledger_ids(cluster.url, len(served)) == served_ids(served)
        assert sorted(records) == sorted(one.request_id for one in expected)
        assert drained_spool(tmp_path) == 0
    assert chain_verifies(cluster.url) == ""


async def _around_a_pause(
    process: GatewayProcess, key: str, cluster: Cluster
) -> tuple[list[Sent], list[Sent], list[Sent]]:
    """BEFORE requests (settled), IN_FLIGHT + 1 at once while PostgreSQL is
    paused, AFTER once it runs again."""
    async with client(process, key) as http:
        before = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(process.settle)
        cluster.pause()
        try:
            during = await send_many(http, IN_FLIGHT + 1)
        finally:
            cluster.resume()
        return before, during, await send_many(http, AFTER)
