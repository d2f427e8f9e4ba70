"""sluicegate's own small migration runner.

Piccolo's ``MigrationManager`` finds its engine through ``piccolo_conf.py``;
sluicegate has no global engine, so it runs its migrations itself.

A migration is a module of :mod:`sluicegate.core.db.migrations` named
``m<YYYYMMDD>_<HHMM>_<what>`` with::

    ID: str            # the module name without the leading "m"
    DESCRIPTION: str
    async def forwards(db: Database) -> None   # raw DDL per db.engine_type

Modules run in name order, each in its own transaction together with the row
that records it in ``sluicegate_migration``; on PostgreSQL each transaction
first takes an advisory lock, so two processes migrating at once run one after
the other and the second finds nothing left to do.  On SQLite the transaction
begins IMMEDIATE, which serialises writers the same way.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType

from sluicegate.core.db.database import Database, storage_errors
from sluicegate.core.errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "sluicegate.core.db.migrations"
MIGRATION_TABLE = "sluicegate_migration"
MODULE_NAME = re.compile(r"^m(\d{8}_\d{4}_[a-z0-9_]+)$")
ADVISORY_LOCK_KEY = 0x736C7569636567  # "sluiceg": one lock for every migrator

_CREATE_TABLE = {
    "postgres": f"""
        CREATE TABLE IF NOT EXISTS {MIGRATION_TABLE} (
            id TEXT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    "sqlite": f"""
        CREATE TABLE IF NOT EXISTS {MIGRATION_TABLE} (
            id TEXT PRIMARY KEY NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
                DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
        )""",
}


@dataclass(frozen=True)
class Migration:
    id: str
    description: str
    forwards: Callable[[Database], Awaitable[None]]


def discover(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    """The migrations of ``package``, in name order."""
    root = importlib.import_module(package)
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(root.__path__)
        if MODULE_NAME.match(info.name)
    )
    migrations = [_load(importlib.import_module(f"{package}.{name}")) for name in names]
    seen: set[str] = set()
    for migration in migrations:
        if migration.id in seen:
            raise StorageError(f"two migrations in {package} have id {migration.id!r}")
        seen.add(migration.id)
    return migrations


def _load(module: ModuleType) -> Migration:
    name = module.__name__.rsplit(".", 1)[1]
    expected = name.removeprefix("m")
    ident = getattr(module, "ID", None)
    forwards = getattr(module, "forwards", None)
    if ident != expected or not callable(forwards):
        raise StorageError(
            f"migration module {module.__name__} must define ID = {expected!r}, "
            "DESCRIPTION and async def forwards(db)"
        )
    return Migration(expected, str(getattr(module, "DESCRIPTION", "")), forwards)


async def applied_ids(db: Database) -> list[str]:
    """Ids recorded as applied (empty if the table does not exist yet)."""
    with storage_errors(f"reading applied migrations of {db.description}"):
        if not await _table_exists(db):
            return []
        rows = await db.fetch(f"SELECT id FROM {MIGRATION_TABLE} ORDER BY id")
    return [row["id"] for row in rows]


async def pending(db: Database, package: str = MIGRATIONS_PACKAGE) -> list[str]:
    """Ids of the migrations not yet applied."""
    done = set(await applied_ids(db))
    return [m.id for m in discover(package) if m.id not in done]


async def apply_migrations(
    db: Database, package: str = MIGRATIONS_PACKAGE
) -> list[str]:
    """Apply every pending migration of ``package``; return the applied ids."""
    migrations = discover(package)
    with storage_errors(f"preparing migrations of {db.description}"):
        async with db.transaction():
            await _lock(db)
            await db.execute_ddl(_CREATE_TABLE[db.engine_type])
            rows = await db.fetch(f"SELECT id FROM {MIGRATION_TABLE}")
    done = {row["id"] for row in rows}
    unknown = sorted(done - {m.id for m in migrations})
    if unknown:
        log.warning(
            "the database has migrations this sluicegate does not know "
            "(written by a newer version?): %s",
            ", ".join(unknown),
        )

    applied: list[str] = []
    for migration in migrations:
        if migration.id in done:
            continue
        with storage_errors(f"applying migration {migration.id} to {db.description}"):
            async with db.transaction():
                await _lock(db)
                # Another process may have applied it while we waited.
                if await db.fetch(
                    f"SELECT id FROM {MIGRATION_TABLE} WHERE id = {{}}", migration.id
                ):
                    continue
                await migration.forwards(db)
                await db.fetch(
                    f"INSERT INTO {MIGRATION_TABLE} (id) VALUES ({{}})", migration.id
                )
        log.info("applied migration %s: %s", migration.id, migration.description)
        applied.append(migration.id)
    return applied


async def _lock(db: Database) -> None:
    if db.is_postgres:
        await db.fetch("SELECT pg_advisory_xact_lock({})", ADVISORY_LOCK_KEY)


async def _table_exists(db: Database) -> bool:
    if db.is_postgres:
        rows = await db.fetch(
            "SELECT to_regclass({}) IS NOT NULL AS present", MIGRATION_TABLE
        )
        return bool(rows[0]["present"])
    rows = await db.fetch(
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = {}",
        MIGRATION_TABLE,
    )
    return bool(rows[0]["n"])


@asynccontextmanager
async def ready_database(url: str, *, auto_migrate: bool) -> AsyncIterator[Database]:
    """Connect to ``url``, make sure the schema is current, close at the end.

    ``auto_migrate`` applies pending migrations (what the embedded SQLite
    default does); otherwise pending migrations are a StorageError that says
    to run ``sluicegate migrate``.
    """
    db = await Database.connect(url)
    try:
        if auto_migrate:
            await db.migrate()
        else:
            missing = await pending(db)
            if missing:
                raise StorageError(
                    f"the database {db.description} lacks migrations "
                    f"{', '.join(missing)}: run `sluicegate migrate`"
                )
        yield db
    finally:
        await db.close()
