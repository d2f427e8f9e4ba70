"""A PostgreSQL table locked by another connection while requests flow.

``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`` makes every statement on the table
wait, reads included, without any error: the database answers everything
else.  The gateway runs the full pipeline on a fresh PostgreSQL database and
the shared Redis.  While ``audit_record`` is locked, records go to the spool
(DESIGN §5) and are replayed once it is unlocked; while the ledger (``usage``)
is locked, settlements go on and their rows are written once it is unlocked.
Without Redis, budgets are kept in the database itself: a locked ledger then
fails admissions after the database's lock timeout, with the budget stage's
default ``on_failure: closed``.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from sluicegate.core.db.database import LOCK_TIMEOUT_SECONDS
from tests.fakes.upstream import FakeUpstream
from tests.fault_checks import (
    COST_PER_REQUEST,
    NOTHING_LEFT,
    Sent,
    chain_verifies,
    client,
    drained_spool,
    full_gateway,
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
    wait_for_spooled,
)
from tests.fixtures.gateway import GatewayProcess, provision
from tests.fixtures.throwaway import FaultFigures, table_locked

pytestmark = pytest.mark.postgres

BEFORE, DURING, STREAMS, AFTER = 4, 8, 2, 4
"""Requests before the lock, while it is held (of which STREAMS are streams,
whose end waits for the after steps), and after it."""
SENT = BEFORE + DURING + AFTER
AUDIT_BOUND_SECONDS = 15.0
"""The audit writer waits 5 s for a commit before it spools; a record that
arrives while it retries the spool waits for one more such try."""
LEDGER_BOUND_SECONDS = 10.0
"""A ledger row waits 2 s for the database before it is retried in the
background; the requests must all end while the table is still locked."""
DATABASE_BUDGET_BOUND_SECONDS = 2 * LOCK_TIMEOUT_SECONDS + 3.0
"""Without Redis an admission waits at most the lock timeout for its
counter's lock (held by another admission or settlement waiting for the
table), then at most as long for the table."""


@pytest.fixture
def gateway_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return redis_env(redis_url, redis_prefix)


async def _mixed(http: httpx.AsyncClient) -> list[Sent]:
    """DURING requests at once, the first STREAMS of them streamed."""
    sent: list[Sent] = []

    async def one(stream: bool) -> None:
        sent.append(await send(http, stream=stream))

    async with anyio.create_task_group() as group:
        for index in range(DURING):
            group.start_soon(one, index < STREAMS)
    return sent


async def _audit_locked(
    process: GatewayProcess, key: str, database_url: str, workdir: Path
) -> tuple[list[Sent], int]:
    """Requests around a lock of audit_record; also the records spooled
    while it was held."""
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(records_of, database_url, sent)
        with table_locked(database_url, "audit_record"):
            with anyio.fail_after(AUDIT_BOUND_SECONDS):
                sent += await _mixed(http)
            held = await anyio.to_thread.run_sync(wait_for_spooled, workdir, DURING)
        return sent + await send_many(http, AFTER), held


async def _ledger_locked(
    process: GatewayProcess, key: str, database_url: str
) -> list[Sent]:
    """Requests around a lock of the ledger; those during it must end in it."""
    async with client(process, key) as http:
        sent = await send_many(http, BEFORE)
        with table_locked(database_url, "usage"):
            with anyio.fail_after(LEDGER_BOUND_SECONDS):
                sent += await _mixed(http)
        return sent + await send_many(http, AFTER)


@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_locked_audit_table_spools_the_records_and_replays_them_once_unlocked(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """16 requests: 4 before, 8 while ``audit_record`` is locked (2 of them
    streams), 4 after.

    Must hold:

    * all 16 answer 200; the 8 during the lock within 15 s;
    * while the table is still locked, the spool holds exactly 8 records;
    * once it is unlocked: 16 audit records, one per request id, and an empty
      spool;
    * the ledger holds exactly the 16 request ids and 16 x 20,000 micro-USD;
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    with full_gateway(tmp_path, database_url, upstream, gateway_env) as process:
        sent, held = anyio.run(_audit_locked, process, key, database_url, tmp_path)
        records = records_of(database_url, sent)
        fault_figures.add(
            "postgres audit table locked",
            injected=1,
            sent=len(sent),
            lost=len({one.request_id for one in sent} - set(records)),
        )

        assert [one.status for one in sent] == [200] * SENT
        assert held == DURING
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert drained_spool(tmp_path) == 0
        assert settled_ledger_ids(database_url, SENT) == served_ids(sent)
        assert ledger_spend(database_url) == SENT * COST_PER_REQUEST
        assert settled_leftovers(redis_url, redis_prefix) == NOTHING_LEFT
    assert chain_verifies(database_url) == ""


@pytest.mark.redis
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_locked_ledger_holds_up_no_request_and_loses_no_ledger_row(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """16 requests: 4 before, 8 while the ledger table ``usage`` is locked (2
    of them streams, whose end waits for the budget's settlement), 4 after.

    Must hold:

    * all 16 answer 200, and the 8 during the lock all end while the table is
      still locked, within 10 s;
    * once it is unlocked, the ledger holds exactly the 16 request ids and
      16 x 20,000 micro-USD: no row is lost;
    * 16 audit records, one per request id;
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    with full_gateway(tmp_path, database_url, upstream, gateway_env) as process:
        sent = anyio.run(_ledger_locked, process, key, database_url)
        records = records_of(database_url, sent)
        fault_figures.add(
            "postgres ledger table locked",
            injected=1,
            sent=len(sent),
            lost=len({one.request_id for one in sent} - set(records)),
        )

        assert [one.status for one in sent] == [200] * SENT
        assert slowest(sent) < LEDGER_BOUND_SECONDS
        assert settled_ledger_ids(database_url, SENT) == served_ids(sent)
        assert ledger_spend(database_url) == SENT * COST_PER_REQUEST
        assert sorted(records) == sorted(one.request_id for one in sent)
        assert settled_leftovers(redis_url, redis_prefix) == NOTHING_LEFT
    assert chain_verifies(database_url) == ""


async def _ledger_locked_without_redis(
    process: GatewayProcess, key: str, database_url: str
) -> tuple[list[Sent], list[Sent], list[Sent]]:
    """Requests before, during and after a lock of the ledger; those during
    it must end while it is held."""
    async with client(process, key) as http:
        before = await send_many(http, BEFORE)
        await anyio.to_thread.run_sync(process.settle)
        with table_locked(database_url, "usage"):
            with anyio.fail_after(DATABASE_BUDGET_BOUND_SECONDS + 2):
                during = await _mixed(http)
        return before, during, await send_many(http, AFTER)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_locked_ledger_without_redis_fails_admissions_in_bounded_time(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    fault_figures: FaultFigures,
) -> None:
    """16 requests to a gateway with no Redis, whose budgets live in the
    database: 4 before, 8 at once while ``usage`` is locked (2 of them
    streams), 4 after.

    Must hold:

    * the 8 during the lock answer 503 ``service_unavailable`` (budget
      ``on_failure: closed``), each within twice the lock timeout of 5 s
      plus 3 s, and never reach the upstream;
    * the 8 others answer 200, and the ledger holds exactly their ids and
      8 x 20,000 micro-USD (a settlement the lock fails is
      ``test_budget_stores.py``'s);
    * 16 audit records, one per request id; the chain verifies.
    """
    key = provision(database_url, ["acme"])["acme"]
    with full_gateway(tmp_path, database_url, upstream, {}) as process:
        calls = upstream.calls
        before, during, after = anyio.run(
            _ledger_locked_without_redis, process, key, database_url
        )
        sent = before + during + after
        records = records_of(database_url, sent)
        fault_figures.add(
            "postgres ledger table locked, no redis",
            injected=1,
            sent=len(sent),
            lost=len({one.request_id for one in sent} - set(records)),
        )

        assert statuses(during) == [(503, "service_unavailable")] * DURING
        assert slowest(during) < DATABASE_BUDGET_BOUND_SECONDS
        assert [one.status for one in before + after] == [200] * (BEFORE + AFTER)
        assert upstream.calls - calls == BEFORE + AFTER
        assert settled_ledger_ids(database_url, BEFORE + AFTER) == served_ids(sent)
        assert ledger_spend(database_url) == (BEFORE + AFTER) * COST_PER_REQUEST
        assert sorted(records) == sorted(one.request_id for one in sent)
    assert chain_verifies(database_url) == ""
