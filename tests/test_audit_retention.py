"""Retention deletes expired audit payloads through deletion grants and drops
old records only behind a checkpoint, on SQLite and PostgreSQL; the chain still
verifies and every deletion is itself an audit record."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
import yaml

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.deletion import ids_digest
from sluicegate.core.audit.policy import Policy, clear_policy, policies, set_policy
from sluicegate.core.audit.record import Payload, PendingRecord
from sluicegate.core.audit.retention import apply_policy, run_retention
from sluicegate.core.audit.verify import verify
from sluicegate.core.db.database import Database, driver_errors
from sluicegate.core.evals.periodic import periodic_tasks
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.gateway import sluicegate_executable

if TYPE_CHECKING:
    from sluicegate.core.services import Services

pytestmark = pytest.mark.anyio

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


async def seed(
    database: Database, ages_days: list[int], name: str = "acme", now: datetime = NOW
) -> int:
    """A workspace with one stored record per age (in days before ``now``)."""
    rows = await database.fetch("SELECT id FROM workspace WHERE name = {}", name)
    wid = rows[0]["id"] if rows else (await create_workspace(database, name)).id
    base = len(await database.fetch("SELECT id FROM audit_record"))
    records = []
    for index, age in enumerate(ages_days, start=base + 1):
        payload = Payload("store", f'{{"n":{index}}}', '{"ok":true}', "user-1")
        records.append(
            PendingRecord(
                wid,
                f"req-{index}",
                "request",
                now - timedelta(days=age),
                {"status": 200, "payload_sha256": payload.digest()},
                payload,
            )
        )
    await append(database, records)
    return int(wid)


def policy(wid: int, payload_days: int | None, record_days: int | None) -> Policy:
    return Policy(wid, "acme", payload_days, record_days, "table")


async def column(database: Database, sql: str, *args: Any) -> list[Any]:
    return [next(iter(row.values())) for row in await database.fetch(sql, *args)]


async def records_of(database: Database, kind: str) -> list[dict[str, Any]]:
    rows = await database.fetch(
        "SELECT record FROM audit_record WHERE kind = {} ORDER BY seq", kind
    )
    return [json.loads(row["record"]) for row in rows]


async def chain_ok(database: Database) -> bool:
    return all(report.ok for report in await verify(database))


async def test_expired_payloads_are_deleted_and_younger_ones_kept(
    database: Database,
) -> None:
    wid = await seed(database, [40, 35, 5])
    result = await apply_policy(database, policy(wid, 30, None), NOW)
    assert result.payloads_deleted == 2
    assert await column(database, "SELECT request_id FROM audit_payload") == ["req-3"]
    assert await chain_ok(database)


async def test_payload_deletion_is_recorded_and_granted_by_that_record(
    database: Database,
) -> None:
    wid = await seed(database, [40, 35, 5])
    result = await apply_policy(database, policy(wid, 30, None), NOW)

    [record] = await records_of(database, "retention")
    assert record["request_id"] == result.audit_records[0]
    assert record["payloads_deleted"] == 2
    assert record["payload_request_ids_sha256"] == ids_digest(["req-1", "req-2"])
    assert record["checkpoint"] is None
    grants = await database.fetch(
        "SELECT payload_request_id, granted_by, reason FROM audit_deletion_grant "
        "ORDER BY payload_request_id"
    )
    assert grants == [
        {
            "payload_request_id": rid,
            "granted_by": record["request_id"],
            "reason": "retention",
        }
        for rid in ("req-1", "req-2")
    ]


async def test_old_records_are_dropped_behind_a_checkpoint_of_the_last_one(
    database: Database,
) -> None:
    wid = await seed(database, [400, 300, 10])
    [second_hash] = await column(
        database, "SELECT hash FROM audit_record WHERE seq = 2"
    )
    result = await apply_policy(database, policy(wid, None, 100), NOW)

    assert (result.records_dropped, result.checkpoint_seq) == (2, 2)
    assert await column(database, "SELECT seq FROM audit_record ORDER BY seq") == [3, 4]
    checkpoints = await database.fetch(
        "SELECT seq, hash, explained_by FROM audit_checkpoint"
    )
    assert checkpoints == [
        {"seq": 2, "hash": second_hash, "explained_by": result.audit_records[0]}
    ]
    [record] = await records_of(database, "retention")
    assert record["checkpoint"] == {"seq": 2, "hash": second_hash}
    assert record["records_dropped"] == 2


async def test_dropped_records_take_their_payloads_with_them(
    database: Database,
) -> None:
    wid = await seed(database, [400, 10])
    await apply_policy(database, policy(wid, None, 100), NOW)
    assert await column(database, "SELECT request_id FROM audit_payload") == ["req-2"]


async def test_verification_continues_from_the_checkpoint(
    database: Database,
) -> None:
    wid = await seed(database, [400, 300, 10])
    await apply_policy(database, policy(wid, 30, 100), NOW)
    [report] = await verify(database)
    assert report.ok, report.fault
    assert (report.checkpoint_seq, report.records, report.head_seq) == (2, 2, 4)


async def test_audit_verify_exits_0_after_retention(
    database: Database, database_url: str
) -> None:
    wid = await seed(database, [400, 300, 40, 10])
    await apply_policy(database, policy(wid, 30, 100), NOW)
    result = audit_cli(database_url, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_direct_delete_of_a_record_is_still_refused_after_retention(
    database: Database,
) -> None:
    wid = await seed(database, [400, 300, 10])
    await apply_policy(database, policy(wid, None, 100), NOW)
    with pytest.raises(driver_errors(), match="refused"):
        await database.fetch("DELETE FROM audit_record WHERE seq = 3")
    with pytest.raises(driver_errors(), match="refused"):
        await database.fetch("DELETE FROM audit_deletion_grant")
    assert await column(database, "SELECT count(*) FROM audit_record") == [2]


async def test_a_checkpoint_cannot_be_changed_or_removed(database: Database) -> None:
    wid = await seed(database, [400, 10])
    await apply_policy(database, policy(wid, None, 100), NOW)
    for statement in (
        "UPDATE audit_checkpoint SET seq = 5",
        "UPDATE audit_checkpoint SET in_progress = {}",
        "DELETE FROM audit_checkpoint",
    ):
        with pytest.raises(driver_errors(), match="refused"):
            await database.fetch(statement, *([True] if "{}" in statement else []))


async def test_a_checkpoint_must_name_a_stored_record_by_its_hash(
    database: Database,
) -> None:
    wid = await seed(database, [400, 10])
    with pytest.raises(driver_errors(), match="checkpoint refused"):
        await database.fetch(
            "INSERT INTO audit_checkpoint "
            "(workspace_id, seq, hash, explained_by, created_at) "
            "VALUES ({}, 1, {}, 'req-2', {})",
            wid,
            "f" * 64,
            NOW,
        )


async def test_a_checkpoint_must_be_explained_by_a_retention_record(
    database: Database,
) -> None:
    wid = await seed(database, [400, 10])
    [first_hash] = await column(database, "SELECT hash FROM audit_record WHERE seq = 1")
    with pytest.raises(driver_errors(), match="checkpoint refused"):
        await database.fetch(
            "INSERT INTO audit_checkpoint "
            "(workspace_id, seq, hash, explained_by, created_at) "
            "VALUES ({}, 1, {}, 'req-2', {})",
            wid,
            first_hash,
            NOW,
        )


async def test_retention_works_in_batches_each_with_its_own_record(
    database: Database,
) -> None:
    wid = await seed(database, [400, 390, 380, 370, 360, 10])
    result = await apply_policy(database, policy(wid, None, 100), NOW, batch=2)
    assert (result.records_dropped, len(result.audit_records)) == (5, 3)
    assert await column(database, "SELECT seq FROM audit_checkpoint ORDER BY seq") == [
        2,
        4,
        5,
    ]
    assert await chain_ok(database)


async def test_a_later_run_drops_earlier_retention_records_and_their_grants(
    database: Database,
) -> None:
    wid = await seed(database, [400, 300, 10])
    await apply_policy(database, policy(wid, 30, None), NOW)
    assert await column(database, "SELECT count(*) FROM audit_deletion_grant") == [2]

    later = NOW + timedelta(days=200)
    await apply_policy(database, policy(wid, 30, 100), later)

    kinds = await column(database, "SELECT kind FROM audit_record ORDER BY seq")
    assert kinds == ["retention"]
    assert await column(database, "SELECT count(*) FROM audit_payload") == [0]
    grants = await column(database, "SELECT granted_by FROM audit_deletion_grant")
    assert grants == await column(database, "SELECT request_id FROM audit_record")
    assert await chain_ok(database)


async def test_nothing_expired_writes_no_record(database: Database) -> None:
    wid = await seed(database, [10, 5])
    result = await apply_policy(database, policy(wid, 30, 100), NOW)
    assert result.audit_records == []
    assert await column(database, "SELECT count(*) FROM audit_record") == [2]


async def test_records_appended_after_retention_extend_the_chain(
    database: Database,
) -> None:
    wid = await seed(database, [400, 10])
    await apply_policy(database, policy(wid, None, 100), NOW)
    await seed(database, [0, 0])
    assert await column(database, "SELECT seq FROM audit_record ORDER BY seq") == [
        2,
        3,
        4,
        5,
    ]
    assert await chain_ok(database)


async def commit_open_checkpoint(database: Database, wid: int) -> None:
    """A valid checkpoint at seq 1, committed by hand without closing it."""
    [retention_id] = await column(
        database, "SELECT request_id FROM audit_record WHERE kind = 'retention'"
    )
    [first_hash] = await column(database, "SELECT hash FROM audit_record WHERE seq = 1")
    await database.fetch(
        "INSERT INTO audit_checkpoint (workspace_id, seq, hash, explained_by, "
        "created_at) VALUES ({}, 1, {}, {}, {})",
        wid,
        first_hash,
        retention_id,
        NOW,
    )


async def test_a_checkpoint_left_in_progress_makes_verify_fail(
    database: Database,
) -> None:
    """Written by hand and committed open, a checkpoint is a fault."""
    wid = await seed(database, [400, 10])
    await apply_policy(database, policy(wid, 30, None), NOW)
    await commit_open_checkpoint(database, wid)
    [report] = await verify(database)
    assert report.fault is not None
    assert "left in progress" in report.fault.problem


@pytest.mark.postgres
async def test_on_postgres_an_open_checkpoint_of_an_earlier_transaction_allows_nothing(
    database: Database,
) -> None:
    if not database.is_postgres:
        pytest.skip("transaction ids are PostgreSQL's")
    wid = await seed(database, [400, 10])
    await apply_policy(database, policy(wid, 30, None), NOW)
    await commit_open_checkpoint(database, wid)
    with pytest.raises(driver_errors(), match="refused"):
        await database.fetch("DELETE FROM audit_record WHERE seq = 1")


async def test_a_stored_policy_overrides_the_pipelines_and_clearing_restores_it(
    database: Database, tmp_path: Path
) -> None:
    await create_workspace(database, "acme")
    audit = {"type": "audit", "retention": {"payload_days": 30, "record_days": 400}}
    (tmp_path / "default.yaml").write_text(yaml.safe_dump({"stages": [audit]}))

    [found] = await policies(database, tmp_path)
    assert (found.payload_days, found.record_days, found.source) == (
        30,
        400,
        "pipeline",
    )
    await set_policy(database, "acme", 7, None, NOW)
    [found] = await policies(database, tmp_path)
    assert (found.payload_days, found.record_days, found.source) == (7, None, "table")
    assert await clear_policy(database, "acme")
    [found] = await policies(database, tmp_path)
    assert found.source == "pipeline"


async def test_without_any_policy_nothing_is_deleted(database: Database) -> None:
    await seed(database, [4000])
    found = await policies(database, None)
    assert await run_retention(database, found, NOW) == []
    assert await column(database, "SELECT count(*) FROM audit_payload") == [1]


def audit_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sluicegate_executable(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "SLUICEGATE_DATABASE_URL": database_url},
    )


async def test_retention_cli_sets_a_policy_and_applies_it(
    database: Database, database_url: str
) -> None:
    await seed(database, [90, 60, 1], now=datetime.now(UTC))
    stored = audit_cli(
        database_url, "retention", "set", "--workspace", "acme", "--payload-days", "30"
    )
    assert stored.returncode == 0, stored.stderr

    ran = audit_cli(database_url, "retention", "run", "--json")
    assert ran.returncode == 0, ran.stderr
    [result] = json.loads(ran.stdout)
    assert (result["workspace"], result["payloads_deleted"]) == ("acme", 2)
    assert audit_cli(database_url, "audit", "verify").returncode == 0


async def test_retention_cli_refuses_zero_days(database_url: str) -> None:
    result = audit_cli(
        database_url, "retention", "set", "--workspace", "acme", "--record-days", "0"
    )
    assert result.returncode == 2
    assert "at least 1" in result.stderr


async def test_the_scheduled_job_applies_the_pipeline_policies(
    database: Database, tmp_path: Path
) -> None:
    await seed(database, [90, 1], now=datetime.now(UTC))
    audit = {"type": "audit", "retention": {"payload_days": 30}}
    (tmp_path / "default.yaml").write_text(yaml.safe_dump({"stages": [audit]}))
    services = SimpleNamespace(
        database=database, settings=SimpleNamespace(pipelines_dir=tmp_path)
    )
    job = {task.name: task for task in periodic_tasks()}["sluicegate.audit.retention"]

    await job.run(cast("Services", services))

    assert await column(database, "SELECT request_id FROM audit_payload") == ["req-2"]
    assert await chain_ok(database)


async def test_retention_and_concurrent_appends_keep_the_chain_verifiable(
    database: Database, database_url: str
) -> None:
    wid = await seed(database, [400] * 6)
    others = [await Database.connect(database_url) for _ in range(2)]
    try:
        batches = [
            [
                PendingRecord(wid, f"new-{n}-{i}", "request", NOW, {"status": 200})
                for i in range(3)
            ]
            for n in range(4)
        ]
        await asyncio.gather(
            apply_policy(database, policy(wid, None, 100), NOW, batch=2),
            *(append(others[n % 2], batch) for n, batch in enumerate(batches)),
        )
    finally:
        for other in others:
            await other.close()

    news = await column(
        database, "SELECT count(*) FROM audit_record WHERE request_id LIKE 'new-%'"
    )
    assert news == [12]
    assert await column(
        database, "SELECT count(*) FROM audit_record WHERE request_id LIKE 'req-%'"
    ) == [0]
    assert await chain_ok(database)
