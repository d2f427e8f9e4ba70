"""A provider that is down, slow, resetting connections, answering garbage or
cutting its streams, while requests flow.

The gateway runs the full pipeline on PostgreSQL and the shared Redis, with a
route stage that retries twice with full-jitter backoff within a deadline.
The degraded modes are those of DESIGN §5: a failed attempt (5xx, timeout,
reset, garbage) is retried within the request's deadline, a ``Retry-After``
is honoured, the breaker opens on a failure rate; a stream that breaks after
it started ends with an SSE error event, never a clean end, and its audit
record says ``truncated``.

Requests whose faults hit only some attempts are sent first and alone, and
the others once the fake upstream has received them, so that every count
below (statuses, upstream calls, ledger rows) is exact.  The fault figures
count as injected faults the faulty answers the upstream gave.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fault_checks import (
    COST_PER_REQUEST,
    MESSAGES,
    NOTHING_LEFT,
    Leftovers,
    Sent,
    chain_verifies,
    client,
    full_gateway,
    full_pipeline,
    ledger_ids,
    ledger_spend,
    records_of,
    redis_env,
    send,
    served_ids,
    settled_leftovers,
    slowest,
    statuses,
    upstream_reached,
)
from tests.fixtures.gateway import PUBLIC_MODEL, GatewayProcess, provision
from tests.fixtures.throwaway import FaultFigures
from tests.test_budget_gateway import cost, ledger

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TARGET = "mock/upstream-model"
DEADLINE_SECONDS = 10.0
ROUTE = {
    "type": "route",
    "retries": 2,
    "deadline_seconds": DEADLINE_SECONDS,
    "backoff_base_seconds": 0.05,
    "backoff_max_seconds": 1,
    "retry_after_cap_seconds": 3,
}
"""Three attempts per request, with waits of at most 0.05 s and 0.1 s."""
AMPLE_RETRIES = {"SLUICEGATE_RETRY_BUDGET_MINIMUM_PER_SECOND": "100"}
"""The process's retry budget never refuses a retry these tests make."""
NO_BREAKER = {"SLUICEGATE_BREAKER_MINIMUM_CALLS": "1000"}
"""The breaker never opens, where it is not what a test is about."""


def retrying_pipeline(**route: Any) -> dict[str, Any]:
    """:func:`full_pipeline` whose route stage is :data:`ROUTE` and ``route``."""
    pipeline = full_pipeline()
    pipeline["stages"] = [
        {**ROUTE, **route} if stage["type"] == "route" else stage
        for stage in pipeline["stages"]
    ]
    return pipeline


@pytest.fixture
def gateway_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {**redis_env(redis_url, redis_prefix), **AMPLE_RETRIES}


# -- requests --------------------------------------------------------------------


async def _append(http: httpx.AsyncClient, sent: list[Sent], stream: bool) -> None:
    sent.append(await send(http, stream=stream))


async def _mixed_into(
    sent: list[Sent], http: httpx.AsyncClient, plain: int, streams: int
) -> None:
    """``plain`` whole answers and ``streams`` streams at once, into ``sent``."""
    async with anyio.create_task_group() as group:
        for index in range(plain + streams):
            group.start_soon(_append, http, sent, index >= plain)


async def _mixed(http: httpx.AsyncClient, plain: int, streams: int) -> list[Sent]:
    sent: list[Sent] = []
    await _mixed_into(sent, http, plain, streams)
    return sent


@dataclass(frozen=True)
class Streamed:
    """One stream as the client read it: its non-empty lines."""

    sent: Sent
    lines: list[str]

    @property
    def ending(self) -> str:
        """``[DONE]``, ``error <code>`` for an error event, or what came last."""
        last = self.lines[-1]
        if last == "data: [DONE]":
            return "[DONE]"
        event = orjson.loads(last.removeprefix("data: "))
        if isinstance(event, dict) and isinstance(event.get("error"), dict):
            return f"error {event['error']['code']}"
        return last


async def _stream(http: httpx.AsyncClient) -> Streamed:
    """One streamed chat completion, read line by line to its end."""
    body = {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": True}
    started = anyio.current_time()
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line async for line in response.aiter_lines() if line]

    seconds = anyio.current_time() - started
    request_id = response.headers["x-request-id"]
    return Streamed(Sent(response.status_code, seconds, request_id, None), lines)


async def _streams(http: httpx.AsyncClient, count: int) -> list[Streamed]:
    """``count`` streams at once."""
    found: list[Streamed] = []

    async def one() -> None:
        found.append(await _stream(http))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return found


async def _breaker_state(http: httpx.AsyncClient) -> str:
    """The state of the target's breaker, as ``/readyz`` shows it."""
    checks = (await http.get("/readyz")).json()["checks"]
    state: str = checks["breakers"]["targets"][TARGET]["state"]
    return state


# -- what must hold afterwards -----------------------------------------------------


@dataclass(frozen=True)
class Aftermath:
    """What the requests left behind once they all ended."""

    audited: list[str]
    """Request ids with an audit record."""
    charged: list[str]
    """Request ids with a ledger row."""
    spend: int
    """The ledger's micro-USD."""
    leftovers: Leftovers


def aftermath(
    database_url: str, redis_url: str, prefix: str, records: dict[str, Any]
) -> Aftermath:
    """The :class:`Aftermath` found, once Redis holds nothing or the wait is over."""
    return Aftermath(
        audited=sorted(records),
        charged=ledger_ids(database_url),
        spend=ledger_spend(database_url),
        leftovers=settled_leftovers(redis_url, prefix),
    )


def ids(sent: list[Sent]) -> list[str]:
    return sorted(one.request_id for one in sent)


def fates(records: dict[str, dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    """How many audit records have each (fate, status, error code)."""
    found = Counter(
        (record["fate"], record["status"], record["error_code"])
        for record in records.values()
    )
    return dict(found)


def count_fault(
    figures: FaultFigures,
    fault: str,
    injected: int,
    sent: list[Sent],
    records: dict[str, Any],
) -> None:
    """Add ``injected`` faults of kind ``fault`` and the records lost to them."""
    lost = {one.request_id for one in sent} - set(records)
    figures.add(fault, injected=injected, sent=len(sent), lost=len(lost))


# -- provider down ---------------------------------------------------------------

RETRY_AFTER = 0.2
COOLDOWN = 2.0
BEFORE, DOWN, REFUSED, AFTER = 4, 6, 3, 6
"""Served before the outage, failed during it, refused by the open breaker,
served after the probe (which is one request more)."""
OUTAGE_CALLS = BEFORE + 3 * DOWN
OUTAGE_ENV = {
    "SLUICEGATE_BREAKER_MINIMUM_CALLS": str(OUTAGE_CALLS),
    "SLUICEGATE_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN),
}
"""The breaker opens on the outage's last failed attempt (18 of 22 calls
failed), not before: every request of the outage makes its three attempts."""


@dataclass(frozen=True)
class Outage:
    """The requests of an outage, and the breaker's state after its failures
    and at the end."""

    sent: list[Sent]
    breaker_during: str
    breaker_after: str


async def _through_an_outage(
    process: GatewayProcess, key: str, upstream: FakeUpstream
) -> Outage:
    """Requests before, during and after an outage of every upstream call."""
    async with client(process, key) as http:
        sent = await _mixed(http, BEFORE // 2, BEFORE // 2)

        headers = {"retry-after": f"{RETRY_AFTER}"}
        upstream.default = Reply(status=503, headers=headers)
        sent += await _mixed(http, DOWN - 2, 2)
        sent += await _mixed(http, REFUSED, 0)
        during = await _breaker_state(http)

        upstream.default = Reply()
        await anyio.sleep(COOLDOWN + 0.2)
        sent.append(await send(http))
        sent += await _mixed(http, AFTER // 2, AFTER // 2)
        return Outage(sent, during, await _breaker_state(http))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_provider_down_fails_its_requests_opens_the_breaker_and_recovers(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """20 requests: 4 served (2 streams), then 6 (2 streams) while every
    upstream answer is 503 with ``Retry-After: 0.2``, 3 more at once, then the
    upstream recovers: after the 2 s cool-down 1 probe, then 6 (3 streams).

    Must hold:

    * the 6 during the outage make 3 attempts each and answer 502
      ``upstream_error``; each took at least the 2 x 0.2 s Retry-After asked;
    * their 18 failures open the breaker (18 of 22 calls): the 3 after them
      answer 503 ``upstream_unavailable`` without reaching the upstream, and
      /readyz shows the breaker open;
    * the probe and the 6 after it answer 200, and the breaker is closed;
    * no request takes the 10 s deadline; the upstream saw 4 + 18 + 1 + 6 = 29
      calls;
    * 20 audit records: 11 served, 6 failed 502, 3 failed 503;
    * the ledger holds exactly the 11 served ids and 11 x 20,000 micro-USD;
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    env = {**gateway_env, **OUTAGE_ENV}
    pipeline = retrying_pipeline()
    with full_gateway(tmp_path, database_url, upstream, env, pipeline) as process:
        outage = anyio.run(_through_an_outage, process, key, upstream)
        sent = outage.sent
        records = records_of(database_url, sent)
        count_fault(fault_figures, "provider down (503)", 3 * DOWN, sent, records)

        served = BEFORE + 1 + AFTER
        failed = [one for one in sent if one.status == 502]
        assert slowest(sent) < DEADLINE_SECONDS, sent
        assert min(one.seconds for one in failed) >= 2 * RETRY_AFTER, failed
        assert statuses(sent) == (
            [(200, None)] * served
            + [(502, "upstream_error")] * DOWN
            + [(503, "upstream_unavailable")] * REFUSED
        )
        assert (outage.breaker_during, outage.breaker_after) == ("open", "closed")
        assert upstream.calls == OUTAGE_CALLS + 1 + AFTER
        assert fates(records) == {
            ("served", 200, None): served,
            ("failed", 502, "upstream_error"): DOWN,
            ("failed", 503, "upstream_unavailable"): REFUSED,
        }
        assert aftermath(database_url, redis_url, redis_prefix, records) == Aftermath(
            audited=ids(sent),
            charged=served_ids(sent),
            spend=served * COST_PER_REQUEST,
            leftovers=NOTHING_LEFT,
        )
    assert chain_verifies(database_url) == ""


# -- provider slow ---------------------------------------------------------------

SHORT_DEADLINE = 1.0
SLOW_SECONDS = 5.0
MARGIN_SECONDS = 1.5
"""Past the deadline, the time a loaded machine may take to answer 504."""
EARLY, SLOW, BESIDE, LATE = 4, 4, 4, 4
"""Served before, held past the deadline (one of them a stream), served
while those are held, served after."""


async def _past_the_deadline(
    process: GatewayProcess, key: str, upstream: FakeUpstream
) -> list[Sent]:
    """Requests around and beside ones the upstream holds past the deadline."""
    async with client(process, key) as http:
        sent = await _mixed(http, EARLY // 2, EARLY // 2)

        upstream.script([Reply(delay=SLOW_SECONDS)] * SLOW)
        async with anyio.create_task_group() as group:
            group.start_soon(_mixed_into, sent, http, SLOW - 1, 1)
            await upstream_reached(upstream, EARLY + SLOW)
            await _mixed_into(sent, http, BESIDE // 2, BESIDE // 2)

        return sent + await _mixed(http, LATE // 2, LATE // 2)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_slow_provider_is_cut_off_at_the_deadline_and_charged_nothing(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """16 requests on a route with a 1 s deadline: 4 served (2 streams), 4
    the upstream holds for 5 s (1 stream), 4 while those are held (2
    streams), 4 after (2 streams).

    Must hold:

    * the 4 held answer 504 ``upstream_timeout`` after at least 1 s and under
      1 + 1.5 s, each after a single attempt (no time is left for another);
    * the other 12 answer 200; the upstream saw 16 calls;
    * 16 audit records: 12 served, 4 failed 504;
    * the ledger holds exactly the 12 served ids and 12 x 20,000 micro-USD:
      nothing for the requests cut off;
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    env = {**gateway_env, **NO_BREAKER}
    pipeline = retrying_pipeline(deadline_seconds=SHORT_DEADLINE)
    with full_gateway(tmp_path, database_url, upstream, env, pipeline) as process:
        sent = anyio.run(_past_the_deadline, process, key, upstream)
        records = records_of(database_url, sent)
        count_fault(fault_figures, "provider slow (deadline)", SLOW, sent, records)

        served = EARLY + BESIDE + LATE
        late = [one.seconds for one in sent if one.status == 504]
        assert len(late) == SLOW, sent
        assert min(late) >= SHORT_DEADLINE, late
        assert max(late) < SHORT_DEADLINE + MARGIN_SECONDS, late
        assert statuses(sent) == (
            [(200, None)] * served + [(504, "upstream_timeout")] * SLOW
        )
        assert upstream.calls == served + SLOW
        assert fates(records) == {
            ("served", 200, None): served,
            ("failed", 504, "upstream_timeout"): SLOW,
        }
        assert aftermath(database_url, redis_url, redis_prefix, records) == Aftermath(
            audited=ids(sent),
            charged=served_ids(sent),
            spend=served * COST_PER_REQUEST,
            leftovers=NOTHING_LEFT,
        )
    assert chain_verifies(database_url) == ""


# -- provider resetting or answering garbage -------------------------------------

FLAKY, STEADY, DEAD, RECOVERED = 4, 4, 2, 4
"""Whole answers whose first attempt meets the fault, requests sent beside
them (half streamed), whole answers whose every attempt meets it, requests
after (half streamed)."""
FAULT_DELAY = 0.2
"""How long a flaky request's faulty answer takes: its retry comes after
every flaky request's first attempt has taken its fault."""
FLAKY_CALLS = 2 * FLAKY + STEADY + 3 * DEAD + RECOVERED
FLAKY_SERVED = FLAKY + STEADY + RECOVERED


async def _flaky_then_dead(
    process: GatewayProcess, key: str, upstream: FakeUpstream, fault: Reply
) -> list[Sent]:
    """Requests meeting ``fault`` once, others beside them, requests meeting it
    on every attempt, then requests after."""
    async with client(process, key) as http:
        sent: list[Sent] = []
        upstream.script([dataclasses.replace(fault, delay=FAULT_DELAY)] * FLAKY)
        async with anyio.create_task_group() as group:
            group.start_soon(_mixed_into, sent, http, FLAKY, 0)
            await upstream_reached(upstream, FLAKY)
            await _mixed_into(sent, http, STEADY // 2, STEADY // 2)

        upstream.script([fault] * (3 * DEAD))
        await _mixed_into(sent, http, DEAD, 0)
        return sent + await _mixed(http, RECOVERED // 2, RECOVERED // 2)


@dataclasses.dataclass(frozen=True)
class Flaky:
    """A provider fault met once by some requests and always by others."""

    reply: Reply
    name: str
    """The fault's line in the figures."""
    dead: tuple[int, str]
    """Status and error code of the requests that meet it on every attempt."""


FLAKY_FAULTS = {
    "reset": Flaky(Reply(reset=True), "provider reset", (503, "upstream_unavailable")),
    "garbage": Flaky(Reply(garbage=True), "provider garbage", (502, "upstream_error")),
}
"""A connection reset (TCP RST): no target could be reached, 503.  A 200 whose
body is not JSON: the provider answered with an error, 502."""


@pytest.mark.parametrize("fault", sorted(FLAKY_FAULTS))
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_flaky_provider_is_retried_and_only_the_always_failing_fail(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
    fault: str,
) -> None:
    """14 requests: 4 whose first attempt meets the fault (a reset
    connection, or a 200 whose body is not JSON), 4 beside them (2 streams),
    2 whose three attempts all meet it, 4 after (2 streams).

    Must hold:

    * the 4 that meet it once are retried and answer 200, as do the 8 others;
    * the 2 that meet it every time answer 503 ``upstream_unavailable`` for a
      reset (no target could be reached), 502 ``upstream_error`` for garbage;
    * the upstream saw 2 x 4 + 4 + 3 x 2 + 4 = 22 calls;
    * 14 audit records: 12 served, 2 failed;
    * the ledger holds exactly the 12 served ids and 12 x 20,000 micro-USD:
      no row for a failed attempt;
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    flaky = FLAKY_FAULTS[fault]
    status, code = flaky.dead
    key = provision(database_url, ["acme"])["acme"]
    env = {**gateway_env, **NO_BREAKER}
    with full_gateway(
        tmp_path, database_url, upstream, env, retrying_pipeline()
    ) as process:
        sent = anyio.run(_flaky_then_dead, process, key, upstream, flaky.reply)
        records = records_of(database_url, sent)
        injected = FLAKY + 3 * DEAD
        count_fault(fault_figures, flaky.name, injected, sent, records)

        assert slowest(sent) < DEADLINE_SECONDS, sent
        assert statuses(sent) == (
            [(200, None)] * FLAKY_SERVED + [(status, code)] * DEAD
        )
        assert upstream.calls == FLAKY_CALLS
        assert fates(records) == {
            ("served", 200, None): FLAKY_SERVED,
            ("failed", status, code): DEAD,
        }
        assert aftermath(database_url, redis_url, redis_prefix, records) == Aftermath(
            audited=ids(sent),
            charged=served_ids(sent),
            spend=FLAKY_SERVED * COST_PER_REQUEST,
            leftovers=NOTHING_LEFT,
        )
    assert chain_verifies(database_url) == ""


# -- a stream cut mid-way --------------------------------------------------------

CUT, WHOLE, PLAIN = 3, 3, 3
"""Streams cut by the upstream, streams and whole answers after them."""
CUT_AFTER = 2
"""Events the upstream sends before it closes: the role, then ``Hello ``."""
TRUNCATED_COST = cost(1, 2)
"""What a cut stream is charged: no usage came, so the gateway's estimate of
1 prompt token ("hi": 2 characters / 4, rounded up) and 2 completion tokens
("Hello ": 6 characters / 4, rounded up), 5,000 micro-USD."""


@dataclass(frozen=True)
class Cut:
    """The streams cut, and the requests served after them."""

    cut: list[Streamed]
    whole: list[Streamed]
    plain: list[Sent]

    @property
    def sent(self) -> list[Sent]:
        return [one.sent for one in self.cut + self.whole] + self.plain


async def _cut_streams(
    process: GatewayProcess, key: str, upstream: FakeUpstream
) -> Cut:
    """Streams the upstream cuts, then streams and whole answers it does not."""
    async with client(process, key) as http:
        upstream.script([Reply(stream_cut_after=CUT_AFTER)] * CUT)
        cut = await _streams(http, CUT)

        plain: list[Sent] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_mixed_into, plain, http, PLAIN, 0)
            whole = await _streams(http, WHOLE)
        return Cut(cut, whole, plain)


def _ledger_usage(database_url: str) -> list[tuple[int, int, int]]:
    """(prompt tokens, completion tokens, micro-USD) of each ledger row, sorted."""
    rows = ledger(database_url)
    return sorted(
        (row["prompt_tokens"], row["completion_tokens"], row["cost_micros"])
        for row in rows
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_stream_cut_mid_way_ends_in_an_error_event_and_a_truncated_record(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    gateway_env: dict[str, str],
    redis_url: str,
    redis_prefix: str,
    fault_figures: FaultFigures,
) -> None:
    """9 requests: 3 streams the upstream closes after 2 events, then 3
    streams and 3 whole answers it serves.

    Must hold:

    * the 3 cut streams start with 200, relay the 2 events, then end with an
      error event of code ``upstream_error``, never ``data: [DONE]``; they
      are not retried (the upstream saw 9 calls);
    * the 3 other streams end with ``data: [DONE]``; all 6 others answer 200;
    * 9 audit records: 6 served, 3 truncated (502 ``upstream_error``);
    * the ledger holds a row for each of the 9 request ids: 6 of the
      provider's usage (10 + 5 tokens, 20,000 micro-USD) and 3 of the
      gateway's estimate for a stream that reported none (1 + 2 tokens,
      5,000 micro-USD);
    * no budget hold and no concurrency slot is left in Redis;
    * ``sluicegate audit verify`` exits 0.
    """
    key = provision(database_url, ["acme"])["acme"]
    env = {**gateway_env, **NO_BREAKER}
    with full_gateway(
        tmp_path, database_url, upstream, env, retrying_pipeline()
    ) as process:
        cut = anyio.run(_cut_streams, process, key, upstream)
        sent = cut.sent
        records = records_of(database_url, sent)
        count_fault(fault_figures, "provider stream cut", CUT, sent, records)

        assert statuses(sent) == [(200, None)] * (CUT + WHOLE + PLAIN)
        assert [one.ending for one in cut.cut] == ["error upstream_error"] * CUT
        assert [len(one.lines) for one in cut.cut] == [CUT_AFTER + 1] * CUT
        assert [one.ending for one in cut.whole] == ["[DONE]"] * WHOLE
        assert upstream.calls == CUT + WHOLE + PLAIN
        assert fates(records) == {
            ("served", 200, None): WHOLE + PLAIN,
            ("truncated", 502, "upstream_error"): CUT,
        }
        assert _ledger_usage(database_url) == (
            [(1, 2, TRUNCATED_COST)] * CUT
            + [(10, 5, COST_PER_REQUEST)] * (WHOLE + PLAIN)
        )
        assert aftermath(database_url, redis_url, redis_prefix, records) == Aftermath(
            audited=ids(sent),
            charged=ids(sent),
            spend=(WHOLE + PLAIN) * COST_PER_REQUEST + CUT * TRUNCATED_COST,
            leftovers=NOTHING_LEFT,
        )
    assert chain_verifies(database_url) == ""
