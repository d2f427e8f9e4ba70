"""Audit records written by a real gateway, driven by the official openai SDK:
one record per request whatever its fate, with the hashes of what was sent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from sluicegate.core.db.database import Database
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.databases import run_async
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
    sluicegate_executable,
)

MESSAGES = [{"role": "user", "content": "Mail me at ada@example.com"}]
WAIT_SECONDS = 20.0


def pipeline(payloads: str = "hash", hold: bool = True) -> dict[str, Any]:
    """Audit, auth and route; ``hold`` keeps each record before its answer
    leaves (``commit_before_response``), so tests read records at once."""
    return {
        "stages": [
            {"type": "audit", "payloads": payloads, "commit_before_response": hold},
            {"type": "auth", "models": [PUBLIC_MODEL]},
            {"type": "route", "retries": 0},
        ]
    }


def audit_rows(database_url: str, table: str = "audit_record") -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        database = await Database.connect(database_url)
        try:
            return await database.fetch(f"SELECT * FROM {table} ORDER BY id")
        finally:
            await database.close()

    return run_async(read)


def records(database_url: str) -> dict[str, dict[str, Any]]:
    """request id -> the record's fields."""
    return {
        row["request_id"]: json.loads(row["record"]) for row in audit_rows(database_url)
    }


def wait_for_records(database_url: str, count: int) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + WAIT_SECONDS
    found = records(database_url)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        found = records(database_url)
    return found


def audit_verify(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sluicegate_executable(), "audit", "verify"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "SLUICEGATE_DATABASE_URL": database_url},
    )


@pytest.fixture
def audited(
    tmp_path: Path, database_url: str, upstream: FakeUpstream, request: Any
) -> Iterator[tuple[GatewayProcess, str]]:
    payloads = getattr(request, "param", "hash")
    keys = provision(database_url, ["acme"])
    process = GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": pipeline(payloads)},
    )
    with process:
        yield process, keys["acme"]


def sdk(process: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{process.base_url}/v1", api_key=key, max_retries=0)


def served(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    return raw.headers["x-request-id"]


def refused(client: openai.OpenAI, model: str) -> str:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return caught.value.response.headers["x-request-id"]


def streamed(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC_MODEL,
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    with raw.parse() as stream:
        assert [chunk for chunk in stream]
    return raw.headers["x-request-id"]


def cancelled(client: openai.OpenAI, upstream: FakeUpstream) -> str:
    hold = threading.Event()
    upstream.script([Reply(hold=hold, hold_after=1)])
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC_MODEL,
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    stream = raw.parse()
    next(iter(stream))
    stream.close()
    # Released only once the gateway has let go of the upstream stream: an
    # upstream ending first would let the relay finish the stream as served.
    assert upstream.wait_abandoned(1, timeout=30), "the hang-up went unnoticed"
    hold.set()
    return raw.headers["x-request-id"]


def test_every_request_of_a_mixed_run_has_exactly_one_record(
    audited: tuple[GatewayProcess, str], upstream: FakeUpstream, database_url: str
) -> None:
    process, key = audited
    with sdk(process, key) as client:
        ids = {"served": served(client), "denied": refused(client, "other-model")}
        upstream.script([Reply(status=500)])
        ids["failed"] = refused(client, PUBLIC_MODEL)
        ids["streamed"] = streamed(client)
        ids["cancelled"] = cancelled(client, upstream)

    found = wait_for_records(database_url, len(ids))
    missing = sorted(
        name for name, request_id in ids.items() if request_id not in found
    )
    assert missing == [], f"no record for {missing}:\n{process.log()[-3000:]}"
    assert sorted(found) == sorted(ids.values())
    fates = {name: found[request_id]["fate"] for name, request_id in ids.items()}
    assert fates == {
        "served": "served",
        "denied": "denied",
        "failed": "failed",
        "streamed": "served",
        "cancelled": "cancelled",
    }
    assert found[ids["denied"]]["denied_by"] == "auth"
    assert found[ids["denied"]]["status"] == 403
    result = audit_verify(database_url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_record_names_target_tokens_and_decisions(
    audited: tuple[GatewayProcess, str], database_url: str
) -> None:
    process, key = audited
    with sdk(process, key) as client:
        request_id = served(client)
    record = records(database_url)[request_id]
    assert record["target"] == "mock/upstream-model"
    assert record["model"] == PUBLIC_MODEL
    assert record["status"] == 200
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
    assert record["client_ip"] == "127.0.0.1"
    assert {
        "stage": "route",
        "decision": "served",
        "detail": "mock/upstream-model",
    } in record["decisions"]
    assert record["seq"] == 1


def test_by_default_a_record_is_kept_right_after_its_answer(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    """Without ``commit_before_response`` the answer does not wait for the
    commit; the record is there once the after steps have run."""
    keys = provision(database_url, ["acme"])
    pipelines = {"default": pipeline(hold=False)}
    with GatewayProcess(
        tmp_path, database_url, gateway_config(upstream), pipelines
    ) as process:
        with sdk(process, keys["acme"]) as client:
            request_ids = [served(client) for _ in range(3)]
        process.settle()
        found = records(database_url)
    assert sorted(found) == sorted(request_ids)
    assert sorted(record["seq"] for record in found.values()) == [1, 2, 3]


@pytest.mark.parametrize(
    ("path", "extra"),
    [("/v1/chat/completions", {}), ("/v1/messages", {"max_tokens": 16})],
    ids=["chat", "messages"],
)
def test_the_record_hashes_the_exact_bodies_sent_and_received(
    audited: tuple[GatewayProcess, str],
    database_url: str,
    path: str,
    extra: dict[str, Any],
) -> None:
    """On both routes: the stream's bytes as the client got them are hashed."""
    process, key = audited
    body = json.dumps(
        {"model": PUBLIC_MODEL, "messages": MESSAGES, "stream": True, **extra}
    ).encode()
    with httpx.stream(
        "POST",
        f"{process.base_url}{path}",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    ) as response:
        received = response.read()
        request_id = response.headers["x-request-id"]
    record = wait_for_records(database_url, 1)[request_id]
    assert record["request_sha256"] == hashlib.sha256(body).hexdigest()
    assert record["response_sha256"] == hashlib.sha256(received).hexdigest()


@pytest.mark.parametrize("audited", ["store"], indirect=True)
def test_payloads_store_keeps_the_bodies(
    audited: tuple[GatewayProcess, str], database_url: str
) -> None:
    process, key = audited
    with sdk(process, key) as client:
        request_id = served(client)
    [payload] = audit_rows(database_url, "audit_payload")
    assert payload["request_id"] == request_id
    assert "ada@example.com" in payload["request_body"]
    assert "Hello from the fake upstream" in payload["response_body"]


@pytest.mark.parametrize("audited", ["redact"], indirect=True)
def test_payloads_redact_masks_personal_data(
    audited: tuple[GatewayProcess, str], database_url: str
) -> None:
    process, key = audited
    with sdk(process, key) as client:
        served(client)
    [payload] = audit_rows(database_url, "audit_payload")
    assert "ada@example.com" not in payload["request_body"]
    assert "[EMAIL]" in payload["request_body"]
    result = audit_verify(database_url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_payloads_hash_keeps_no_bodies(
    audited: tuple[GatewayProcess, str], database_url: str
) -> None:
    process, key = audited
    with sdk(process, key) as client:
        served(client)
    assert audit_rows(database_url, "audit_payload") == []
