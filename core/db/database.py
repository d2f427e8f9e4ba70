"""One database (SQLite or PostgreSQL) behind one Piccolo engine.

:meth:`Database.connect` builds the engine from ``SLUICEGATE_DATABASE_URL``
(``sqlite:///path`` or ``postgresql://user@host:port/name``), checks that the
database answers and binds the table classes to it (:mod:`.tables`).  Nothing
is module-global: two :class:`Database` objects can be open in one process.

Driver errors are turned into :class:`~sluicegate.core.errors.StorageError`
(:func:`storage_errors`); :func:`violation_of` tells which constraint a refused
write broke, on either dialect.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType
from piccolo.querystring import QueryString

from sluicegate.core.db.bounded import within
from sluicegate.core.db.tables import Tables, bind_tables, unregister_tables
from sluicegate.core.errors import StorageError

if TYPE_CHECKING:
    from piccolo.engine.base import Engine


T = TypeVar("T")

SQLITE_SCHEME = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 10.0
SQLITE_BUSY_TIMEOUT_SECONDS = 10.0
LOCK_TIMEOUT_SECONDS = 5.0
"""How long a PostgreSQL statement may wait for a lock (``lock_timeout``)
before it fails: a table locked by someone else then costs a request an
error its stage's ``on_failure`` decides on, never an unbounded wait.  The
SQLite counterpart is the busy timeout."""


async def _keep_session(connection: Any) -> None:
    """Return a connection to the pool without asyncpg's reset round trip.

    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, unlocking advisory
    locks) costs a round trip per checkout, as much as the query itself.
    sluicegate never leaves session state behind: its advisory locks are
    transaction-scoped and it sets no session variables; an open transaction
    is still rolled back by asyncpg before this runs.
    """


class Violation(StrEnum):
    """The kind of constraint a refused write broke."""

    UNIQUE = "unique"
    FOREIGN_KEY = "foreign_key"
    CHECK = "check"
    NOT_NULL = "not_null"


class Database:
    """One open database: its Piccolo engine and the table classes bound to it."""

    engine_type: str
    """``"sqlite"`` or ``"postgres"``."""
    tables: Tables

    def __init__(self, engine: Engine[Any], description: str) -> None:
        self.engine = engine
        self.engine_type = engine.engine_type
        self.description = description
        """Where the database is (a path or user@host:port/name), never a password."""
        self.tables = bind_tables(engine)
        self._closed = False
        self._abandoned: set[asyncio.Task[Any]] = set()
        """Work :meth:`within` gave up on that has not ended yet."""

    def __repr__(self) -> str:
        return f"<Database {self.engine_type} {self.description}>"

    @property
    def is_sqlite(self) -> bool:
        return self.engine_type == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine_type == "postgres"

    # -- opening and closing ---------------------------------------------------

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = POOL_SIZE) -> Database:
        """Open ``url`` and check that it answers; StorageError if it does not."""
        if url.startswith(SQLITE_SCHEME):
            return await cls._connect_sqlite(url)
        if url.startswith(POSTGRES_SCHEMES):
            return await cls._connect_postgres(url, pool_size)
        raise StorageError(
            f"unsupported database URL scheme in {_scheme_of(url)!r}: use "
            "sqlite:///path/to/file.db or postgresql://user@host:5432/name"
        )

    @classmethod
    async def _connect_sqlite(cls, url: str) -> Database:
        path = sqlite_path(url)
        try:
            import aiosqlite  # noqa: F401
        except ImportError as exc:
            raise StorageError(
                "SQLite support needs the aiosqlite driver: "
                "pip install 'piccolo[sqlite]'"
            ) from exc
        if not Path(path).parent.is_dir():
            raise StorageError(
                f"cannot open SQLite database {path}: "
                f"directory {Path(path).parent} does not exist"
            )
        engine = _SQLiteEngine(path=path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
        database = cls(engine, path)
        try:
            # WAL lets readers proceed while one writer writes; the mode is
            # stored in the file, so setting it once per open is enough.
            with storage_errors(f"cannot open SQLite database {path}"):
                await engine.run_ddl("PRAGMA journal_mode = WAL")
            await database.ping()
        except BaseException:
            await database.close()
            raise
        return database

    @classmethod
    async def _connect_postgres(cls, url: str, pool_size: int) -> Database:
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:
            raise StorageError(
                "PostgreSQL support needs the asyncpg driver: "
                "pip install 'piccolo[postgres]'"
            ) from exc
        where = describe_postgres_url(url)
        lock_timeout = str(int(LOCK_TIMEOUT_SECONDS * 1000))
        engine = _PostgresEngine(
            config={"dsn": url, "server_settings": {"lock_timeout": lock_timeout}}
        )
        connect_errors: tuple[type[BaseException], ...] = (*driver_errors(), ValueError)
        try:
            await engine.start_connection_pool(
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                reset=_keep_session,
            )
        except connect_errors as exc:
            message = redact(f"{type(exc).__name__}: {exc}", url)
            raise StorageError(
                f"cannot connect to PostgreSQL at {where}: {message}"
            ) from None
        database = cls(engine, where)
        try:
            await database.ping()
        except BaseException:
            await database.close()
            raise
        return database

    async def close(self) -> None:
        """Close the pool (PostgreSQL); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        unregister_tables(self.tables)
        if isinstance(self.engine, PostgresEngine) and self.engine.pool is not None:
            await self.engine.close_connection_pool()

    # -- queries -----------------------------------------------------------------

    async def ping(self) -> None:
        """Raise StorageError if the database does not answer."""
        with storage_errors(f"{self.engine_type} database {self.description}"):
            await self.fetch("SELECT 1 AS ok")

    async def within(self, seconds: float, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, or TimeoutError after ``seconds`` even if the
        database hangs; the work is then left to end on its own
        (``core/db/bounded.py``: only for work whose late end is harmless)."""
        return await within(seconds, work, self._abandoned)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the ids applied (empty if none)."""
        from sluicegate.core.db.migrate import apply_migrations

        return await apply_migrations(self)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Run one statement with ``{}`` placeholders; return its rows as dicts.

        Inside :meth:`transaction` it runs on the transaction's connection.
        """
        response = await self.engine.run_querystring(QueryString(sql, *args))
        rows: list[dict[str, Any]] = self.engine.transform_response_to_dicts(response)
        return rows

    async def execute_ddl(self, sql: str) -> None:
        """Run one DDL statement verbatim (no placeholders)."""
        await self.engine.run_ddl(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction; queries of this task inside it use its connection.

        On SQLite it begins IMMEDIATE (takes the write lock at once), so two
        writers queue on the busy timeout instead of failing on lock upgrade.
        """
        if self.is_sqlite:
            async with self.engine.transaction(
                transaction_type=TransactionType.immediate
            ):
                yield
        else:
            async with self.engine.transaction():
                yield


class _PostgresEngine(PostgresEngine):
    """Piccolo's PostgresEngine without the blocking checks of its constructor.

    ``Engine.__init__`` runs ``check_version`` and ``prep_database`` through
    ``run_sync``, which inside a running event loop opens a blocking connection
    on a helper thread and only warns if it fails.  :meth:`Database.connect`
    checks the connection itself, asynchronously; we create no extensions.
    """

    async def check_version(self) -> None:
        return None

    async def prep_database(self) -> None:
        return None


class _SQLiteEngine(SQLiteEngine):
    """Piccolo's SQLiteEngine without the version check of its constructor,
    which only logs the library version (on every connect, at INFO)."""

    async def check_version(self) -> None:
        return None


# -- URLs ----------------------------------------------------------------------


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:////abs`` is absolute)."""
    path = url.removeprefix(SQLITE_SCHEME)
    if not path or path.startswith(":memory:") or "?" in path:
        raise StorageError(
            f"unsupported SQLite URL {url!r}: use sqlite:///relative/file.db or "
            "sqlite:////absolute/file.db (no in-memory database, no query string)"
        )
    return path


def describe_postgres_url(url: str) -> str:
    """``user@host:port/name`` of a PostgreSQL URL, without the password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        port = parts.port or 5432
    except ValueError:
        return "(an unparsable PostgreSQL URL)"
    user = f"{parts.username}@" if parts.username else ""
    name = parts.path.lstrip("/") or "(default database)"
    return f"{user}{host}:{port}/{name}"


def redact(text: str, url: str) -> str:
    """``text`` with the URL's password (if any) masked."""
    try:
        parts = urlsplit(url)
        passwords = [parts.password] if parts.password else []
        passwords += parse_qs(parts.query).get("password", [])
    except ValueError:
        return text
    for password in passwords:
        text = text.replace(password, "***")
    return text


def _scheme_of(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else url[:12]


# -- errors --------------------------------------------------------------------


def driver_errors() -> tuple[type[BaseException], ...]:
    """The exceptions the database drivers raise (asyncpg's only if loaded)."""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, TimeoutError)
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is not None:
        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    return errors


_SQLSTATES = {
    "23505": Violation.UNIQUE,
    "23503": Violation.FOREIGN_KEY,
    "23514": Violation.CHECK,
    "23502": Violation.NOT_NULL,
}
_SQLITE_CODES = {
    "SQLITE_CONSTRAINT_UNIQUE": Violation.UNIQUE,
    "SQLITE_CONSTRAINT_PRIMARYKEY": Violation.UNIQUE,
    "SQLITE_CONSTRAINT_FOREIGNKEY": Violation.FOREIGN_KEY,
    "SQLITE_CONSTRAINT_CHECK": Violation.CHECK,
    "SQLITE_CONSTRAINT_NOTNULL": Violation.NOT_NULL,
}


def violation_of(exc: BaseException) -> Violation | None:
    """Which constraint a driver error (or the StorageError wrapping one)
    reports as broken, or None."""
    if isinstance(exc, StorageError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, sqlite3.IntegrityError):
        if str(exc).startswith("FOREIGN KEY constraint failed"):
            # ON DELETE RESTRICT reports SQLITE_CONSTRAINT_TRIGGER.
            return Violation.FOREIGN_KEY
        return _SQLITE_CODES.get(getattr(exc, "sqlite_errorname", ""))
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _SQLSTATES.get(sqlstate)
    return None


def is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, driver_errors())


def _missing_table(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "no such table" in str(exc)
    return getattr(exc, "sqlstate", None) == "42P01"


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn driver errors inside the block into StorageError about ``action``."""
    try:
        yield
    except driver_errors() as exc:
        hint = (
            "; the schema is missing or old: run `sluicegate migrate`"
            if _missing_table(exc)
            else ""
        )
        raise StorageError(f"{action}: {type(exc).__name__}: {exc}{hint}") from exc
