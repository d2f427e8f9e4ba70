"""SIGTERM drains: /readyz turns unready, in-flight streams finish, exit 0."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import (
    DEFAULT_PIPELINE,
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)

NOTICE_SECONDS = 3


@pytest.fixture
def draining_gateway(
    tmp_path: Path, upstream: FakeUpstream
) -> Iterator[tuple[GatewayProcess, str]]:
    database_url = f"sqlite:///{tmp_path / 'sluicegate.db'}"
    keys = provision(database_url, ["acme"])
    process = GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": DEFAULT_PIPELINE},
        env={
            "SLUICEGATE_DRAIN_SECONDS": "20",
            "SLUICEGATE_DRAIN_NOTICE_SECONDS": str(NOTICE_SECONDS),
        },
    )
    with process:
        yield process, keys["acme"]


def test_sigterm_mid_stream_lets_the_stream_finish_and_exits_0(
    draining_gateway: tuple[GatewayProcess, str], upstream: FakeUpstream
) -> None:
    process, key = draining_gateway
    hold = threading.Event()
    upstream.script([Reply(hold=hold, hold_after=1)])
    sdk = openai.OpenAI(base_url=f"{process.base_url}/v1", api_key=key, max_retries=0)

    with sdk.chat.completions.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    ) as stream:
        chunks = iter(stream)
        first = next(chunks)
        assert process.process is not None
        process.process.send_signal(signal.SIGTERM)
        readyz = _readyz_while_draining(process)
        hold.set()
        rest = list(chunks)

    assert first.choices[0].delta.role == "assistant"
    assert readyz.status_code == 503
    assert readyz.json() == {"status": "draining"}
    assert [c.choices[0].finish_reason for c in rest if c.choices][-1] == "stop"
    assert process.process.wait(timeout=30) == 0


def test_a_process_without_requests_exits_0_on_sigterm(
    draining_gateway: tuple[GatewayProcess, str],
) -> None:
    process, _ = draining_gateway

    assert process.stop() == 0


def _readyz_while_draining(process: GatewayProcess) -> httpx.Response:
    """/readyz from a new connection, once the signal has been handled."""
    for _ in range(50):
        response = httpx.get(f"{process.base_url}/readyz", timeout=5)
        if response.status_code == 503:
            return response
        threading.Event().wait(0.05)
    return response
