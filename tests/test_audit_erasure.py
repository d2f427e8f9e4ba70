"""GDPR erasure removes one subject's content from every table that keeps it,
records the erasure in the workspace's chain, and leaves the chain verifiable,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.deletion import ids_digest
from sluicegate.core.audit.erasure import erase_subject
from sluicegate.core.audit.record import Payload, PendingRecord, digest
from sluicegate.core.audit.verify import verify
from sluicegate.core.db.database import Database
from sluicegate.core.errors import InvalidRequest
from sluicegate.core.workspaces import create_workspace
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.databases import run_async
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
    sluicegate_executable,
)

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
ALICE_CANARY = "canary-alice-7f3a9c"
BOB_CANARY = "canary-bob-2d81e4"


def body(subject: str, canary: str) -> str:
    return json.dumps(
        {"model": PUBLIC_MODEL, "user": subject, "messages": [{"content": canary}]}
    )


async def seed(database: Database, name: str = "acme") -> int:
    """Two requests of alice, one of bob, each with its payload stored."""
    wid = (await create_workspace(database, name)).id
    records = []
    people = [("alice", ALICE_CANARY), ("bob", BOB_CANARY), ("alice", ALICE_CANARY)]
    for index, (subject, canary) in enumerate(people, start=1):
        payload = Payload("store", body(subject, canary), f'"{canary}"', subject)
        records.append(
            PendingRecord(
                wid,
                f"{name}-req-{index}",
                "request",
                NOW,
                {"status": 200, "payload_sha256": payload.digest()},
                payload,
            )
        )
    await append(database, records)
    return wid


async def defer_job(database: Database, wid: int, request_id: str, text: str) -> None:
    """An evaluation job waiting in the database, as the queue defers it."""
    job = {
        "request_id": request_id,
        "workspace_id": wid,
        "prompt": text,
        "request_body": json.loads(body("alice", text)),
    }
    await database.fetch(
        "INSERT INTO evaluation_deferred (request_id, job, reason, created_at) "
        "VALUES ({}, {}, 'queue unreachable', {})",
        request_id,
        json.dumps(job),
        NOW,
    )


async def tables_holding(database: Database, text: str) -> list[str]:
    """Every table with a row in which ``text`` appears in any column."""
    if database.is_postgres:
        sql = "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    holding = []
    for table in sorted(row["name"] for row in await database.fetch(sql)):
        rows = await database.fetch(f"SELECT * FROM {table}")
        if any(text in str(value) for row in rows for value in row.values()):
            holding.append(table)
    return holding


async def erasure_records(database: Database) -> list[dict[str, Any]]:
    rows = await database.fetch(
        "SELECT record FROM audit_record WHERE kind = 'erasure' ORDER BY seq"
    )
    return [json.loads(row["record"]) for row in rows]


@pytest.mark.anyio
async def test_no_content_of_the_erased_subject_remains_in_any_table(
    database: Database,
) -> None:
    wid = await seed(database)
    await defer_job(database, wid, "acme-req-3", ALICE_CANARY)
    assert await tables_holding(database, ALICE_CANARY) == [
        "audit_payload",
        "evaluation_deferred",
    ]
    await erase_subject(database, "acme", "alice", NOW)
    assert await tables_holding(database, ALICE_CANARY) == []


@pytest.mark.anyio
async def test_other_subjects_content_is_kept(database: Database) -> None:
    await seed(database)
    await erase_subject(database, "acme", "alice", NOW)
    rows = await database.fetch("SELECT request_id, subject FROM audit_payload")
    assert rows == [{"request_id": "acme-req-2", "subject": "bob"}]


@pytest.mark.anyio
async def test_erasure_in_one_workspace_leaves_the_others_alone(
    database: Database,
) -> None:
    await seed(database, "acme")
    await seed(database, "globex")
    await erase_subject(database, "acme", "alice", NOW)
    rows = await database.fetch(
        "SELECT request_id FROM audit_payload WHERE subject = 'alice' ORDER BY 1"
    )
    assert [row["request_id"] for row in rows] == ["globex-req-1", "globex-req-3"]


@pytest.mark.anyio
async def test_the_erasure_is_an_audit_record_granting_each_deletion(
    database: Database,
) -> None:
    wid = await seed(database)
    await defer_job(database, wid, "acme-req-3", ALICE_CANARY)
    result = await erase_subject(database, "acme", "alice", NOW)

    [record] = await erasure_records(database)
    assert record["request_id"] == result.audit_records[0]
    assert record["seq"] == 4
    assert record["subject_sha256"] == digest("alice")
    assert record["payloads_deleted"] == 2
    assert record["deferred_evaluations_deleted"] == 1
    assert record["payload_request_ids_sha256"] == ids_digest(
        ["acme-req-1", "acme-req-3"]
    )
    grants = await database.fetch(
        "SELECT payload_request_id, granted_by, reason FROM audit_deletion_grant "
        "ORDER BY payload_request_id"
    )
    assert grants == [
        {
            "payload_request_id": rid,
            "granted_by": record["request_id"],
            "reason": "erasure",
        }
        for rid in ("acme-req-1", "acme-req-3")
    ]


@pytest.mark.anyio
async def test_the_chain_verifies_after_erasure(database: Database) -> None:
    await seed(database)
    await erase_subject(database, "acme", "alice", NOW)
    [report] = await verify(database)
    assert report.ok, report.fault
    assert (report.records, report.payloads) == (4, 1)


@pytest.mark.anyio
async def test_erasing_a_subject_with_nothing_stored_is_still_recorded(
    database: Database,
) -> None:
    await seed(database)
    result = await erase_subject(database, "acme", "carol", NOW)
    assert result.payloads_deleted == 0
    [record] = await erasure_records(database)
    assert record["payloads_deleted"] == 0


@pytest.mark.anyio
async def test_erasure_works_in_batches_each_with_its_own_record(
    database: Database,
) -> None:
    await seed(database)
    result = await erase_subject(database, "acme", "alice", NOW, batch=1)
    assert (result.payloads_deleted, len(result.audit_records)) == (2, 2)
    assert [r["payloads_deleted"] for r in await erasure_records(database)] == [1, 1]


@pytest.mark.anyio
async def test_an_empty_subject_is_refused(database: Database) -> None:
    await seed(database)
    with pytest.raises(InvalidRequest, match="subject is empty"):
        await erase_subject(database, "acme", "", NOW)


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sluicegate_executable(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "SLUICEGATE_DATABASE_URL": database_url},
    )


@pytest.mark.anyio
async def test_erase_of_an_unknown_workspace_exits_2(
    database: Database, database_url: str
) -> None:
    result = cli(database_url, "erase", "--workspace", "nope", "--subject", "alice")
    assert result.returncode == 2
    assert "no workspace 'nope'" in result.stderr


def test_a_gateway_run_then_erase_leaves_no_trace_and_a_verifiable_chain(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    keys = provision(database_url, ["acme"])
    pipeline = {
        "stages": [
            {"type": "audit", "payloads": "store"},
            {"type": "auth", "models": [PUBLIC_MODEL]},
            {"type": "route", "retries": 0},
        ]
    }
    process = GatewayProcess(
        tmp_path, database_url, gateway_config(upstream), {"default": pipeline}
    )
    with process:
        client = openai.OpenAI(
            base_url=f"{process.base_url}/v1", api_key=keys["acme"], max_retries=0
        )
        with client:
            for user, canary in [("alice", ALICE_CANARY), ("bob", BOB_CANARY)] * 2:
                client.chat.completions.create(
                    model=PUBLIC_MODEL,
                    user=user,
                    messages=[{"role": "user", "content": f"remember {canary}"}],
                )

    erased = cli(
        database_url, "erase", "--workspace", "acme", "--subject", "alice", "--json"
    )
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["payloads_deleted"] == 2

    holding = run_async(lambda: _scan(database_url))
    assert holding == {"alice": [], "bob": ["audit_payload"]}
    assert not any(ALICE_CANARY in p.read_text() for p in tmp_path.rglob("*.jsonl"))
    verified = cli(database_url, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def _scan(database_url: str) -> dict[str, list[str]]:
    database = await Database.connect(database_url)
    try:
        return {
            "alice": await tables_holding(database, ALICE_CANARY),
            "bob": await tables_holding(database, BOB_CANARY),
        }
    finally:
        await database.close()
