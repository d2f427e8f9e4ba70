"""Two gateway processes appending to one workspace's chain at once, on
PostgreSQL: the chain stays gap-free and verifies."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.fixtures.databases import create_postgres_database, drop_postgres_database
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)
from tests.test_audit_gateway import audit_rows, audit_verify, pipeline

pytestmark = pytest.mark.postgres

REQUESTS_PER_CLIENT = 15
CLIENTS_PER_GATEWAY = 3


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    url = create_postgres_database(postgres_admin_url)
    yield url
    drop_postgres_database(postgres_admin_url, url)


def ask(base_url: str, key: str) -> list[str]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0) as client:
        return [
            client.chat.completions.with_raw_response.create(
                model=PUBLIC_MODEL,
                messages=[{"role": "user", "content": "hi"}],
            ).headers["x-request-id"]
            for _ in range(REQUESTS_PER_CLIENT)
        ]


def test_two_gateways_appending_at_once_keep_one_gap_free_chain(
    tmp_path: Path, postgres_url: str, upstream: FakeUpstream
) -> None:
    key = provision(postgres_url, ["acme"])["acme"]
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        gateways.append(
            GatewayProcess(
                tmp_path / name,
                postgres_url,
                gateway_config(upstream),
                {"default": pipeline()},
            )
        )
    with gateways[0], gateways[1], ThreadPoolExecutor(max_workers=6) as pool:
        jobs = [
            pool.submit(ask, gateway.base_url, key)
            for gateway in gateways
            for _ in range(CLIENTS_PER_GATEWAY)
        ]
        request_ids = [rid for job in jobs for rid in job.result()]

    total = 2 * CLIENTS_PER_GATEWAY * REQUESTS_PER_CLIENT
    rows = audit_rows(postgres_url)
    assert sorted(row["seq"] for row in rows) == list(range(1, total + 1))
    assert sorted(row["request_id"] for row in rows) == sorted(request_ids)
    result = audit_verify(postgres_url)
    assert result.returncode == 0, result.stdout + result.stderr
