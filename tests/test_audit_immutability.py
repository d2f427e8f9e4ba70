"""The database itself refuses to change or remove audit records, and
``sluicegate audit verify`` names a record changed behind the triggers' back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.record import Payload, PendingRecord
from sluicegate.core.db.database import Database, driver_errors
from sluicegate.core.workspaces import create_workspace
from tests.fixtures.databases import create_postgres_database, drop_postgres_database
from tests.fixtures.gateway import sluicegate_executable

pytestmark = pytest.mark.anyio


@pytest.fixture
async def postgres(postgres_admin_url: str) -> AsyncIterator[Database]:
    """A migrated database on PostgreSQL only (for TRUNCATE and replica mode)."""
    url = create_postgres_database(postgres_admin_url)
    database = await Database.connect(url)
    try:
        await database.migrate()
        yield database
    finally:
        await database.close()
        drop_postgres_database(postgres_admin_url, url)


async def three_records(database: Database) -> int:
    wid = (await create_workspace(database, "acme")).id
    records = []
    for index in range(1, 4):
        payload = Payload("store", f'{{"n":{index}}}', '{"ok":true}', "user-1")
        records.append(
            PendingRecord(
                wid,
                f"req-{index}",
                "request",
                datetime.now(UTC),
                {"status": 200, "payload_sha256": payload.digest()},
                payload,
            )
        )
    await append(database, records)
    return wid


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_record SET record = 'x' WHERE seq = 2",
        "DELETE FROM audit_record WHERE seq = 3",
        "DELETE FROM audit_record",
        "UPDATE audit_payload SET request_body = '{}'",
        "DELETE FROM audit_payload WHERE request_id = 'req-1'",
    ],
)
async def test_changing_audit_rows_in_sql_is_refused(
    database: Database, statement: str
) -> None:
    await three_records(database)
    with pytest.raises(driver_errors(), match=r"append-only|refused"):
        await database.fetch(statement)
    assert await database.fetch("SELECT count(*) AS n FROM audit_record") == [{"n": 3}]
    assert await database.fetch("SELECT count(*) AS n FROM audit_payload") == [{"n": 3}]


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["audit_record", "audit_payload"])
async def test_truncate_is_refused_on_postgres(postgres: Database, table: str) -> None:
    await three_records(postgres)
    with pytest.raises(driver_errors(), match="TRUNCATE is refused"):
        await postgres.fetch(f"TRUNCATE {table} CASCADE")


@pytest.mark.postgres
async def test_the_triggers_fire_in_replica_mode_on_postgres(
    postgres: Database,
) -> None:
    await three_records(postgres)
    with pytest.raises(driver_errors(), match="UPDATE is refused"):
        async with postgres.transaction():
            await postgres.fetch("SET LOCAL session_replication_role = replica")
            await postgres.fetch("UPDATE audit_record SET kind = 'x'")


async def test_a_payload_named_by_a_deletion_grant_may_be_deleted(
    database: Database,
) -> None:
    await three_records(database)
    await database.fetch(
        "INSERT INTO audit_deletion_grant (payload_request_id, granted_by, reason) "
        "VALUES ('req-1', 'req-3', 'erasure')"
    )
    await database.fetch("DELETE FROM audit_payload WHERE request_id = 'req-1'")
    rows = await database.fetch("SELECT request_id FROM audit_payload ORDER BY 1")
    assert [row["request_id"] for row in rows] == ["req-2", "req-3"]


async def tamper(database: Database, sql: str) -> None:
    """Change audit_record as its owner would, with the guard switched off."""
    if database.is_postgres:
        async with database.transaction():
            await database.fetch("ALTER TABLE audit_record DISABLE TRIGGER USER")
            await database.fetch(sql)
            for trigger in ("audit_record_no_change", "audit_record_no_truncate"):
                await database.fetch(
                    f"ALTER TABLE audit_record ENABLE ALWAYS TRIGGER {trigger}"
                )
        return
    ddl = await database.fetch(
        "SELECT sql FROM sqlite_master WHERE name = 'audit_record_no_update'"
    )
    await database.execute_ddl("DROP TRIGGER audit_record_no_update")
    await database.fetch(sql)
    await database.execute_ddl(ddl[0]["sql"])


def audit_verify(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLUICEGATE_DATABASE_URL": database_url}
    return subprocess.run(
        [sluicegate_executable(), "audit", "verify", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


async def test_audit_verify_passes_an_untouched_chain(
    database: Database, database_url: str
) -> None:
    await three_records(database)
    result = audit_verify(database_url, "--workspace", "acme")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme" in result.stdout and "ok" in result.stdout


async def test_one_changed_byte_makes_verify_fail_naming_that_record(
    database: Database, database_url: str
) -> None:
    await three_records(database)
    await tamper(
        database,
        "UPDATE audit_record SET record = replace(record, '\"status\":200', "
        "'\"status\":201') WHERE seq = 2",
    )
    result = audit_verify(database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "first bad record is seq 2 (request req-2" in result.stdout
    assert "does not match" in result.stdout


async def test_a_changed_payload_makes_verify_fail_naming_its_record(
    database: Database, database_url: str
) -> None:
    await three_records(database)
    await tamper_payload(database)
    result = audit_verify(database_url, "--json")
    assert result.returncode == 1
    assert '"request_id": "req-3"' in result.stdout
    assert "payload differs" in result.stdout


async def tamper_payload(database: Database) -> None:
    if database.is_postgres:
        async with database.transaction():
            await database.fetch("ALTER TABLE audit_payload DISABLE TRIGGER USER")
            await database.fetch(
                "UPDATE audit_payload SET response_body = '{\"ok\":false}' "
                "WHERE request_id = 'req-3'"
            )
            await database.fetch(
                "ALTER TABLE audit_payload "
                "ENABLE ALWAYS TRIGGER audit_payload_no_update"
            )
        return
    await database.execute_ddl("DROP TRIGGER audit_payload_no_update")
    await database.fetch(
        "UPDATE audit_payload SET response_body = '{\"ok\":false}' "
        "WHERE request_id = 'req-3'"
    )
