"""Migrations apply on SQLite and PostgreSQL, once; the database guards the data.

Constraint tests write with raw SQL, past every check in Python, to prove the
database itself refuses bad rows.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from sluicegate.core.db.database import (
    Database,
    Violation,
    describe_postgres_url,
    driver_errors,
    redact,
    violation_of,
)
from sluicegate.core.db.migrate import (
    MIGRATION_TABLE,
    applied_ids,
    apply_migrations,
    discover,
    pending,
)
from sluicegate.core.errors import StorageError

pytestmark = pytest.mark.anyio

INITIAL = "20261203_1700_initial"
HASH = hashlib.sha256(b"x").hexdigest()


async def refused(db: Database, sql: str, *args: Any) -> Violation | None:
    """Run a write the database must refuse; return the constraint it names."""
    with pytest.raises(driver_errors()) as info:
        await db.fetch(sql, *args)
    return violation_of(info.value)


async def workspace(db: Database, name: str) -> int:
    rows = await db.fetch("INSERT INTO workspace (name) VALUES ({}) RETURNING id", name)
    return int(rows[0]["id"])


async def api_key(db: Database, workspace_id: int, prefix: str) -> int:
    rows = await db.fetch(
        "INSERT INTO api_key (workspace_id, prefix, secret_hash) "
        "VALUES ({}, {}, {}) RETURNING id",
        workspace_id,
        prefix,
        HASH,
    )
    return int(rows[0]["id"])


USAGE = (
    "INSERT INTO usage (request_id, workspace_id, key_id, model, status, "
    "prompt_tokens, completion_tokens, cached_tokens, cost_micros) "
    "VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})"
)


def usage_args(workspace_id: int, key_id: int | None, **overrides: Any) -> list[Any]:
    values = {
        "request_id": "req-" + secrets.token_hex(4),
        "workspace_id": workspace_id,
        "key_id": key_id,
        "model": "gpt-test",
        "status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost_micros": 1234,
    }
    values.update(overrides)
    return list(values.values())


# -- applying ------------------------------------------------------------------


def test_migrations_are_discovered_in_name_order() -> None:
    ids = [migration.id for migration in discover()]
    assert ids[0] == INITIAL
    assert ids == sorted(ids)


def all_ids() -> list[str]:
    return [migration.id for migration in discover()]


async def test_migrate_applies_once(database_url: str) -> None:
    db = await Database.connect(database_url)
    try:
        assert await applied_ids(db) == []
        assert await pending(db) == all_ids()
        assert await db.migrate() == all_ids()
        assert await db.migrate() == []
        assert await applied_ids(db) == all_ids()
        assert await pending(db) == []
        rows = await db.fetch(f"SELECT id, applied_at FROM {MIGRATION_TABLE}")
        assert sorted(row["id"] for row in rows) == all_ids()
        assert rows[0]["applied_at"] is not None
        for table in ("workspace", "api_key", "usage"):
            assert await db.fetch(f"SELECT count(*) AS n FROM {table}") == [{"n": 0}]
    finally:
        await db.close()


async def test_two_migrators_at_once_apply_each_migration_once(
    database_url: str,
) -> None:
    first = await Database.connect(database_url)
    second = await Database.connect(database_url)
    results: list[list[str]] = []

    async def run(db: Database) -> None:
        results.append(await db.migrate())

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run, first)
            group.start_soon(run, second)
        # Each migration was applied by exactly one of the two.
        assert sorted(results[0] + results[1]) == all_ids()
        assert await applied_ids(first) == all_ids()
    finally:
        await first.close()
        await second.close()


async def test_a_failing_migration_rolls_back_and_is_not_recorded(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "sg_test_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "m20990101_0000_good.py").write_text(
        textwrap.dedent(
            """
            ID = "20990101_0000_good"
            DESCRIPTION = "a table"

            async def forwards(db):
                await db.execute_ddl("CREATE TABLE good_one (id INTEGER)")
            """
        )
    )
    (package / "m20990101_0001_broken.py").write_text(
        textwrap.dedent(
            """
            ID = "20990101_0001_broken"
            DESCRIPTION = "creates a table, then fails"

            async def forwards(db):
                await db.execute_ddl("CREATE TABLE half_done (id INTEGER)")
                raise RuntimeError("broken on purpose")
            """
        )
    )
    (package / "not_a_migration.py").write_text("raise ImportError('not loaded')")
    monkeypatch.syspath_prepend(str(tmp_path))

    db = await Database.connect(database_url)
    try:
        with pytest.raises(RuntimeError, match="broken on purpose"):
            await apply_migrations(db, package="sg_test_migrations")
        assert await applied_ids(db) == ["20990101_0000_good"]
        await db.fetch("SELECT count(*) AS n FROM good_one")
        with pytest.raises(StorageError, match="half_done"):
            await ping_table(db, "half_done")
    finally:
        await db.close()


async def ping_table(db: Database, table: str) -> None:
    from sluicegate.core.db.database import storage_errors

    with storage_errors(f"reading {table}"):
        await db.fetch(f"SELECT count(*) AS n FROM {table}")


# -- connecting ----------------------------------------------------------------


async def test_unreachable_postgres_names_the_host_not_the_password() -> None:
    url = "postgresql://someone:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError) as info:
        await Database.connect(url)
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message


def test_urls_are_described_without_passwords() -> None:
    url = "postgresql://app:s3cret@db.example:6543/gateway"
    assert describe_postgres_url(url) == "app@db.example:6543/gateway"
    assert redact("failed for postgresql://app:s3cret@db", url) == (
        "failed for postgresql://app:***@db"
    )


@pytest.mark.parametrize(
    "url",
    ["mysql://x@y/z", "sqlite:///:memory:", "sqlite:///", "sqlite:///x.db?mode=ro"],
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError):
        await Database.connect(url)


async def test_sqlite_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        await Database.connect(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")


@pytest.mark.postgres
async def test_sqlite_and_postgres_side_by_side(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    lite = await Database.connect(f"sqlite:///{tmp_path / 'side.db'}")
    pg = await Database.connect(fresh_postgres_url)
    try:
        await lite.migrate()
        await pg.migrate()
        name = "side-" + secrets.token_hex(4)
        for db in (lite, pg):
            table = db.tables.workspace
            await table.insert(table(name=f"{name}-{db.engine_type}"))
        for db in (lite, pg):
            table = db.tables.workspace
            names = await table.select(table.name).where(table.name.like(f"{name}%"))
            assert names == [{"name": f"{name}-{db.engine_type}"}]
        assert lite.tables.workspace is not pg.tables.workspace
        assert (
            lite.tables.api_key.workspace_id._foreign_key_meta.resolved_references
            is (lite.tables.workspace)
        )
    finally:
        await lite.close()
        await pg.close()


# -- constraints ---------------------------------------------------------------


async def test_duplicate_workspace_name_is_refused(database: Database) -> None:
    await workspace(database, "acme")
    sql = "INSERT INTO workspace (name) VALUES ({})"
    assert await refused(database, sql, "acme") is Violation.UNIQUE


@pytest.mark.parametrize(
    "name", ["Acme", "-acme", "_acme", "", "a b", "acme!", "ac.me", "é", "a\n"]
)
async def test_bad_workspace_names_are_refused(database: Database, name: str) -> None:
    sql = "INSERT INTO workspace (name) VALUES ({})"
    assert await refused(database, sql, name) is Violation.CHECK


async def test_workspace_name_length_is_limited(database: Database) -> None:
    await workspace(database, "a" * 63)
    with pytest.raises(driver_errors()):
        await database.fetch("INSERT INTO workspace (name) VALUES ({})", "b" * 64)


@pytest.mark.parametrize("name", ["a", "0", "a-b_c", "9lives", "x" * 63])
async def test_good_workspace_names_are_accepted(database: Database, name: str) -> None:
    await workspace(database, name)


async def test_missing_not_null_is_refused(database: Database) -> None:
    sql = "INSERT INTO workspace (name) VALUES ({})"
    assert await refused(database, sql, None) is Violation.NOT_NULL


async def test_key_of_a_missing_workspace_is_refused(database: Database) -> None:
    sql = "INSERT INTO api_key (workspace_id, prefix, secret_hash) VALUES ({}, {}, {})"
    assert await refused(database, sql, 999, "abcd1234", HASH) is Violation.FOREIGN_KEY


@pytest.mark.parametrize(
    ("prefix", "secret_hash"),
    [
        ("ABCD1234", HASH),
        ("abcd123", HASH),
        ("abcd12345", HASH),
        ("1bcd1234", HASH),
        ("abcd1234", HASH[:-1]),
        ("abcd1234", HASH.upper()),
        ("abcd1234", HASH[:-1] + "g"),
    ],
)
async def test_malformed_key_rows_are_refused(
    database: Database, prefix: str, secret_hash: str
) -> None:
    ws = await workspace(database, "acme")
    sql = "INSERT INTO api_key (workspace_id, prefix, secret_hash) VALUES ({}, {}, {})"
    with pytest.raises(driver_errors()) as info:
        await database.fetch(sql, ws, prefix, secret_hash)
    # PostgreSQL refuses an over-long VARCHAR before any CHECK runs.
    assert violation_of(info.value) in (Violation.CHECK, None)


async def test_duplicate_key_prefix_is_refused(database: Database) -> None:
    ws = await workspace(database, "acme")
    await api_key(database, ws, "abcd1234")
    sql = "INSERT INTO api_key (workspace_id, prefix, secret_hash) VALUES ({}, {}, {})"
    assert await refused(database, sql, ws, "abcd1234", HASH) is Violation.UNIQUE


async def test_workspace_with_keys_cannot_be_deleted(database: Database) -> None:
    ws = await workspace(database, "acme")
    await api_key(database, ws, "abcd1234")
    sql = "DELETE FROM workspace WHERE id = {}"
    assert await refused(database, sql, ws) is Violation.FOREIGN_KEY


async def test_usage_row_is_accepted(database: Database) -> None:
    ws = await workspace(database, "acme")
    key = await api_key(database, ws, "abcd1234")
    await database.fetch(USAGE, *usage_args(ws, key))
    await database.fetch(USAGE, *usage_args(ws, None, cost_micros=2**40))
    rows = await database.fetch("SELECT cost_micros, created_at FROM usage ORDER BY id")
    assert [row["cost_micros"] for row in rows] == [1234, 2**40]
    assert all(row["created_at"].tzinfo is not None for row in rows)


async def test_duplicate_usage_request_id_is_refused(database: Database) -> None:
    ws = await workspace(database, "acme")
    await database.fetch(USAGE, *usage_args(ws, None, request_id="req-1"))
    again = usage_args(ws, None, request_id="req-1")
    assert await refused(database, USAGE, *again) is Violation.UNIQUE


@pytest.mark.parametrize(
    "column", ["prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros"]
)
async def test_negative_counts_are_refused(database: Database, column: str) -> None:
    ws = await workspace(database, "acme")
    args = usage_args(ws, None, **{column: -1})
    assert await refused(database, USAGE, *args) is Violation.CHECK


async def test_usage_of_a_missing_workspace_is_refused(database: Database) -> None:
    args = usage_args(999, None)
    assert await refused(database, USAGE, *args) is Violation.FOREIGN_KEY


async def test_usage_of_a_missing_key_is_refused(database: Database) -> None:
    ws = await workspace(database, "acme")
    args = usage_args(ws, 999)
    assert await refused(database, USAGE, *args) is Violation.FOREIGN_KEY


async def test_usage_naming_another_workspaces_key_is_refused(
    database: Database,
) -> None:
    acme = await workspace(database, "acme")
    other = await workspace(database, "other")
    key = await api_key(database, other, "abcd1234")
    args = usage_args(acme, key)
    assert await refused(database, USAGE, *args) is Violation.FOREIGN_KEY


async def test_empty_request_id_is_refused(database: Database) -> None:
    ws = await workspace(database, "acme")
    args = usage_args(ws, None, request_id="")
    assert await refused(database, USAGE, *args) is Violation.CHECK


async def test_sqlite_refuses_text_in_count_columns(tmp_path: Path) -> None:
    # PostgreSQL's types refuse text in an integer column by themselves.
    db = await Database.connect(f"sqlite:///{tmp_path / 'typed.db'}")
    try:
        await db.migrate()
        ws = await workspace(db, "acme")
        args = usage_args(ws, None, prompt_tokens="many")
        assert await refused(db, USAGE, *args) is Violation.CHECK
    finally:
        await db.close()


def test_a_missing_driver_names_what_to_install(tmp_path: Path) -> None:
    # A site directory holding everything installed except the two drivers.
    site_packages = Path(pytest.__file__).resolve().parents[1]
    hidden = tmp_path / "site"
    hidden.mkdir()
    for entry in site_packages.iterdir():
        if not entry.name.startswith(("asyncpg", "aiosqlite")):
            (hidden / entry.name).symlink_to(entry)
    code = textwrap.dedent(
        f"""
        import site
        site.addsitedir({str(hidden)!r})
        import asyncio
        from sluicegate.core.db.database import Database
        for url in ("postgresql://u:pw@127.0.0.1/x", "sqlite:///{tmp_path}/x.db"):
            try:
                asyncio.run(Database.connect(url))
            except Exception as exc:
                print(type(exc).__name__, exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "StorageError PostgreSQL support needs the asyncpg driver: "
        "pip install 'piccolo[postgres]'",
        "StorageError SQLite support needs the aiosqlite driver: "
        "pip install 'piccolo[sqlite]'",
    ]


async def test_closing_forgets_the_table_classes(database_url: str) -> None:
    from piccolo.table import TABLE_REGISTRY

    db = await Database.connect(database_url)
    assert db.tables.workspace in TABLE_REGISTRY
    await db.close()
    await db.close()
    assert not set(db.tables.all()) & set(TABLE_REGISTRY)
