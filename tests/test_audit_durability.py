"""No audit record is lost while the database is away: records are spooled to
local disk and replayed when it returns, even across a gateway crash.

These tests stop and start a PostgreSQL server, so they run their own cluster
(``initdb`` as the ``postgres`` system user) on a spare port, never the shared
one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)
from tests.fixtures.throwaway import Cluster
from tests.test_audit_gateway import audit_rows, audit_verify, pipeline

pytestmark = pytest.mark.postgres

MESSAGES = [{"role": "user", "content": "hello"}]
KEEP_KEYS = {"SLUICEGATE_KEY_CACHE_SECONDS": "3600"}
"""The gateway must still recognise its key while the database is down."""


def ask(process: GatewayProcess, key: str, count: int) -> None:
    with openai.OpenAI(
        base_url=f"{process.base_url}/v1", api_key=key, max_retries=0
    ) as client:
        for _ in range(count):
            client.chat.completions.create(model=PUBLIC_MODEL, messages=MESSAGES)  # type: ignore[arg-type]


def spooled_lines(workdir: Path) -> int:
    """Records in the spool files (not the request journals beside them)."""
    spool = (workdir / "spool").glob("audit-*.jsonl")
    return sum(len(path.read_bytes().splitlines()) for path in spool)


def wait_for_count(url: str, count: int) -> int:
    deadline = time.monotonic() + 30
    found = len(audit_rows(url))
    while found < count and time.monotonic() < deadline:
        time.sleep(0.2)
        found = len(audit_rows(url))
    return found


def test_records_made_while_the_database_is_down_are_replayed_when_it_returns(
    tmp_path: Path, cluster: Cluster, upstream: FakeUpstream
) -> None:
    keys = provision(cluster.url, ["acme"])
    process = GatewayProcess(
        tmp_path,
        cluster.url,
        gateway_config(upstream),
        {"default": pipeline()},
        env=KEEP_KEYS,
    )
    with process:
        ask(process, keys["acme"], 5)
        cluster.stop()
        ask(process, keys["acme"], 7)
        assert spooled_lines(tmp_path) == 7
        cluster.start()
        assert wait_for_count(cluster.url, 12) == 12
        ask(process, keys["acme"], 3)
    assert len(audit_rows(cluster.url)) == 15
    assert spooled_lines(tmp_path) == 0
    result = audit_verify(cluster.url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_crashed_gateways_spool_is_replayed_by_the_next_one(
    tmp_path: Path, cluster: Cluster, upstream: FakeUpstream
) -> None:
    keys = provision(cluster.url, ["acme"])
    first = GatewayProcess(
        tmp_path,
        cluster.url,
        gateway_config(upstream),
        {"default": pipeline()},
        env=KEEP_KEYS,
    )
    with first:
        ask(first, keys["acme"], 2)
        cluster.stop()
        ask(first, keys["acme"], 4)
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
    assert spooled_lines(tmp_path) == 4

    cluster.start()
    second = GatewayProcess(
        tmp_path, cluster.url, gateway_config(upstream), {"default": pipeline()}
    )
    with second:
        assert wait_for_count(cluster.url, 6) == 6
        ask(second, keys["acme"], 1)
    assert len(audit_rows(cluster.url)) == 7
    result = audit_verify(cluster.url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_closed_audit_stage_refuses_requests_while_records_cannot_commit(
    tmp_path: Path, cluster: Cluster, upstream: FakeUpstream
) -> None:
    keys = provision(cluster.url, ["acme"])
    closed = pipeline()
    closed["stages"][0]["on_failure"] = "closed"
    process = GatewayProcess(
        tmp_path,
        cluster.url,
        gateway_config(upstream),
        {"default": closed},
        env=KEEP_KEYS,
    )
    with process:
        ask(process, keys["acme"], 1)
        cluster.stop()
        ask(process, keys["acme"], 1)
        with pytest.raises(openai.APIStatusError) as caught:
            ask(process, keys["acme"], 1)
        assert caught.value.status_code == 503
        assert caught.value.code == "service_unavailable"
        cluster.start()
        assert wait_for_count(cluster.url, 3) == 3
        ask(process, keys["acme"], 1)
    fates = [json.loads(row["record"])["fate"] for row in audit_rows(cluster.url)]
    assert sorted(fates) == ["failed", "served", "served", "served"]
