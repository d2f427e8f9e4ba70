"""A gateway process killed (SIGKILL) with requests in flight, then replaced.

The successor runs on the same PostgreSQL database, Redis and spool
directory.  Nothing of the killed process's in-memory state survives: the
budget holds and concurrency slots of its requests in flight end with their
``hold_seconds`` and ``concurrent_lease_seconds`` (short here), the audit
records it had spooled are replayed by the successor, and the requests it
had in flight are recorded by the successor as ``interrupted`` from its
start-of-request journal.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fault_checks import (
    COST_PER_REQUEST,
    MESSAGES,
    NOTHING_LEFT,
    Sent,
    chain_verifies,
    client,
    drained_spool,
    full_gateway,
    full_pipeline,
    ledger_spend,
    leftovers,
    records_of,
    redis_env,
    send_many,
    served_ids,
    settled_ledger_ids,
    settled_leftovers,
    upstream_reached,
    wait_for_spooled,
)
from tests.fixtures.gateway import PUBLIC_MODEL, GatewayProcess, provision
from tests.fixtures.throwaway import FaultFigures, table_locked
from tests.test_audit_gateway import records, wait_for_records

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

COMMITTED, SPOOLED, AFTER = 4, 4, 4
"""Requests answered and committed before the kill, answered and spooled
(the audit table locked) before it, and answered by the successor."""
SLOW_JSON = 2
"""Whole-answer requests the upstream holds when the gateway is killed; one
held stream is in flight too."""
IN_FLIGHT = SLOW_JSON + 1
ANSWERED = COMMITTED + SPOOLED + AFTER
EXPIRY_SECONDS = 3.0
"""The budget's hold_seconds and the rate limit's concurrent_lease_seconds."""


@pytest.fixture
def gateway_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return redis_env(redis_url, redis_prefix)


def _gateway(
    workdir: Path, database_url: str, upstream: FakeUpstream, env: dict[str, str]
) -> GatewayProcess:
    pipeline = full_pipeline(hold_seconds=EXPIRY_SECONDS, lease_seconds=EXPIRY_SECONDS)
    return full_gateway(workdir, database_url, upstream, env, pipeline)


@dataclass
class InFlight:
    """The requests cut off by the kill."""

    stream_id: str = ""
    first_chunk: anyio.Event = field(default_factory=anyio.Event)
    cut_off: int = 0


async def _held_stream(http: httpx.AsyncClient, flight: InFlight) -> None:
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": True}
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            flight.stream_id = answer.headers["x-request-id"]
            async for _ in answer.aiter_bytes():
                flight.first_chunk.set()
    except httpx.TransportError:
        flight.cut_off += 1


async def _slow_answer(http: httpx.AsyncClient, flight: InFlight) -> None:
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES}
    try:
        await http.post("/v1/chat/completions", json=body)
    except httpx.TransportError:
        flight.cut_off += 1


async def _kill_in_flight(
    process: GatewayProcess, key: str, upstream: FakeUpstream, slow_json: int
) -> InFlight:
    """Start one held stream and ``slow_json`` slow whole answers, and kill
    the gateway once the upstream has them all and the stream has begun."""
    hold = threading.Event()
    upstream.script([Reply(hold=hold)] + [Reply(delay=60)] * slow_json)
    flight = InFlight()
    calls = upstream.calls + 1 + slow_json
    try:
        async with client(process, key) as http, anyio.create_task_group() as group:
            group.start_soon(_held_stream, http, flight)
            with anyio.fail_after(10):
                await flight.first_chunk.wait()
            for _ in range(slow_json):
                group.start_soon(_slow_answer, http, flight)
            await upstream_reached(upstream, calls)
            _kill(process)
    finally:
        hold.set()
    return flight


def _kill(process: GatewayProcess) -> None:
    assert process.process is not None
    process.process.send_signal(signal.SIGKILL)
    process.process.wait()


async def _answered(process: GatewayProcess, key: str, count: int) -> list[Sent]:
    async with client(process, key) as http:
        return await send_many(http, count)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_killed_gateways_successor_replays_its_spool_and_nothing_leaks(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """15 requests: 4 answered and committed, 4 answered while the audit table
    is locked (their records spooled), 3 in flight (a held stream and 2 slow
    answers) when the gateway is SIGKILLed with the table still locked, and 4
    answered by the successor started on the same database, Redis and spool.

    Must hold:

    * right after the kill, Redis holds exactly 3 budget holds and 3
      concurrency slots: those of the 3 requests in flight;
    * once hold_seconds and the lease (3 s) passed and the successor served
      its 4: no hold, nothing reserved, no slot;
    * exactly 15 audit records: those of the 12 answered requests (the 4
      spooled ones replayed by the successor) and the 3 cut off, of fate
      ``interrupted``, status 0 and no response hash; the spool and the
      request journals are empty;
    * the ledger holds exactly the 12 answered request ids, 12 x 20,000
      micro-USD: nobody is charged twice, the 3 cut off are not charged;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    first = _gateway(tmp_path, database_url, upstream, gateway_env).start()
    try:
        sent = anyio.run(_answered, first, key, COMMITTED)
        records_of(database_url, sent)
        with table_locked(database_url, "audit_record"):
            sent += anyio.run(_answered, first, key, SPOOLED)
            assert wait_for_spooled(tmp_path, SPOOLED) == SPOOLED
            flight = anyio.run(_kill_in_flight, first, key, upstream, SLOW_JSON)
            killed_at = time.monotonic()
    finally:
        first.stop()
    held = leftovers(redis_url, redis_prefix)

    with _gateway(tmp_path, database_url, upstream, gateway_env) as second:
        _sleep_until(killed_at + EXPIRY_SECONDS + 0.5)
        sent += anyio.run(_answered, second, key, AFTER)
    found = wait_for_records(database_url, ANSWERED + IN_FLIGHT)
    fault_figures.add(
        "gateway killed (SIGKILL) mid-request",
        injected=1,
        sent=len(sent) + IN_FLIGHT,
        lost=len(sent) + IN_FLIGHT - len(found),
    )

    assert flight.cut_off == IN_FLIGHT
    assert (held.holds, held.slots) == (IN_FLIGHT, IN_FLIGHT)
    assert [one.status for one in sent] == [200] * ANSWERED
    answered = {one.request_id for one in sent}
    assert answered <= set(found)
    assert {found[rid]["fate"] for rid in answered} == {"served"}
    cut_off = [found[rid] for rid in sorted(set(found) - answered)]
    assert [(r["fate"], r["status"], r["response_sha256"]) for r in cut_off] == [
        ("interrupted", 0, None)
    ] * IN_FLIGHT
    assert flight.stream_id in found
    assert drained_spool(tmp_path) == 0
    assert journals(tmp_path) == []
    assert settled_ledger_ids(database_url, ANSWERED) == served_ids(sent)
    assert ledger_spend(database_url) == ANSWERED * COST_PER_REQUEST
    assert settled_leftovers(redis_url, redis_prefix) == NOTHING_LEFT
    assert chain_verifies(database_url) == ""


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_request_cut_off_by_the_kill_still_gets_its_audit_record(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
) -> None:
    """One held stream is in flight when the gateway is SIGKILLed; a successor
    starts on the same database, Redis and spool.

    Must hold: within 3 s of the successor's start, the stream's request id
    has exactly one audit record (every request that reached its pipeline
    has one, DESIGN and README "Audit trail").
    """
    key = provision(database_url, ["acme"])["acme"]
    first = _gateway(tmp_path, database_url, upstream, gateway_env).start()
    try:
        flight = anyio.run(_kill_in_flight, first, key, upstream, 0)
    finally:
        first.stop()

    with _gateway(tmp_path, database_url, upstream, gateway_env):
        deadline = time.monotonic() + 3
        while flight.stream_id not in records(database_url):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    found = records(database_url)
    assert list(found) == [flight.stream_id]
    assert found[flight.stream_id]["fate"] == "interrupted"


def journals(workdir: Path) -> list[str]:
    """The request journals left in the spool directory under ``workdir``."""
    return sorted(path.name for path in (workdir / "spool").glob("inflight-*"))
