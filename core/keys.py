"""API keys: created once, stored as a hash, checked in constant time.

A key reads ``sg-<prefix>-<secret>``: ``prefix`` is 8 lowercase letters and
digits (the first a letter, so a prefix is never mistaken for a numeric id),
the lookup handle stored in clear; ``secret`` is 43 URL-safe characters (32
random bytes).  The database keeps the prefix and the SHA-256 of the whole key,
never the key: it is shown once, when created.

:class:`KeyVerifier` authenticates requests: an indexed lookup by prefix, a
constant-time comparison of the hash, and a short per-process cache of
verified keys so the hot path does not query the database on every request.
A revoked key is refused once its cache entry expires (``key_cache_seconds``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluicegate.core.context import Principal
from sluicegate.core.db.database import Violation, storage_errors, violation_of
from sluicegate.core.errors import InvalidRequest, StorageError
from sluicegate.core.workspaces import get_workspace, list_workspaces

if TYPE_CHECKING:
    from piccolo.query.methods.select import First

    from sluicegate.core.db.database import Database

KEY_START = "sg-"
PREFIX_LENGTH = 8
SECRET_BYTES = 32
NAME_MAX_LENGTH = 255
CACHE_MAX_ENTRIES = 10_000
LOOKUP_TIMEOUT_SECONDS = 5.0
"""A key lookup fails (StorageError) after this long, even against a database
that hangs; the request then gets 503."""
_PREFIX = r"[a-z][a-z0-9]{7}"
_KEY = re.compile(rf"sg-({_PREFIX})-([A-Za-z0-9_-]{{43}})")
_REF_PREFIX = re.compile(rf"(?:sg-)?({_PREFIX})(?:-[A-Za-z0-9_-]{{43}})?")
_ALNUM = string.ascii_lowercase + string.digits
_CREATE_ATTEMPTS = 5


@dataclass(frozen=True)
class KeyRow:
    """An API key as listed: never its secret or hash."""

    id: int
    workspace_id: int
    workspace: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def generate_key() -> tuple[str, str]:
    """A new ``(prefix, key)``."""
    prefix = secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(_ALNUM) for _ in range(PREFIX_LENGTH - 1)
    )
    return prefix, f"{KEY_START}{prefix}-{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def parse_key_ref(ref: str) -> int | str:
    """A key named on the command line: an id (int) or a prefix (str).

    Accepts ``12``, ``abcd1234``, ``sg-abcd1234`` or a whole key.
    """
    text = ref.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _REF_PREFIX.fullmatch(text)
    if match is None:
        raise InvalidRequest(
            f"{ref!r} names no API key: give its id (as `sluicegate key list` "
            "shows it) or its prefix (abcd1234 or sg-abcd1234)",
            param="key",
        )
    return match.group(1)


# -- managing keys ---------------------------------------------------------------


async def create_key(
    db: Database, workspace: str, name: str | None = None
) -> tuple[KeyRow, str]:
    """Create a key in ``workspace``; return its row and the key (shown once)."""
    name = validate_key_name(name)
    found = await get_workspace(db, workspace)
    if found is None:
        raise await _unknown_workspace(db, workspace)
    table = db.tables.api_key
    for _ in range(_CREATE_ATTEMPTS):
        prefix, key = generate_key()
        row = table(
            workspace_id=found.id,
            prefix=prefix,
            secret_hash=hash_key(key),
            name=name,
        )
        try:
            with storage_errors(f"creating a key in workspace {workspace!r}"):
                await table.insert(row)
        except StorageError as exc:
            violation = violation_of(exc)
            if violation is Violation.UNIQUE:
                continue  # the prefix is taken: draw another
            if violation is Violation.FOREIGN_KEY:
                raise await _unknown_workspace(db, workspace) from None
            raise
        created = await _find(db, prefix)
        assert created is not None
        return created, key
    raise StorageError(
        f"could not find a free key prefix in {_CREATE_ATTEMPTS} attempts"
    )


async def list_keys(db: Database, workspace: str | None = None) -> list[KeyRow]:
    """Keys (revoked ones too), of one workspace or all, oldest first."""
    query = _select(db)
    if workspace is not None:
        found = await get_workspace(db, workspace)
        if found is None:
            raise await _unknown_workspace(db, workspace)
        query = query.where(db.tables.api_key.workspace_id == found.id)
    with storage_errors("listing API keys"):
        rows = await query.order_by(db.tables.api_key.id)
    return [_key_row(row) for row in rows]


async def revoke_key(db: Database, prefix_or_id: str) -> KeyRow:
    """Revoke a key by prefix or id; a revoked key keeps its first revocation time.

    InvalidRequest if no key matches.
    """
    ref = parse_key_ref(prefix_or_id)
    table = db.tables.api_key
    match = table.id == ref if isinstance(ref, int) else table.prefix == ref
    with storage_errors(f"revoking API key {prefix_or_id!r}"):
        await table.update({table.revoked_at: datetime.now(UTC)}).where(
            match & table.revoked_at.is_null()
        )
        row = await _select(db).where(match).first()
    if row is None:
        raise InvalidRequest(
            f"no API key {prefix_or_id!r}; `sluicegate key list` shows the keys",
            param="key",
        )
    return _key_row(row)


def validate_key_name(name: str | None) -> str | None:
    """The key name to store (None for none); InvalidRequest if unusable."""
    if name is None or not name.strip():
        return None
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH or not name.isprintable():
        raise InvalidRequest(
            f"invalid key name {name[:40]!r}: use up to {NAME_MAX_LENGTH} "
            "printable characters",
            param="name",
        )
    return name


async def _unknown_workspace(db: Database, workspace: str) -> InvalidRequest:
    names = [row.name for row in await list_workspaces(db)]
    existing = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    return InvalidRequest(
        f"workspace {workspace!r} does not exist "
        f"(existing: {existing or 'none'}); "
        "create one with `sluicegate workspace create NAME`",
        param="workspace",
    )


def _select(db: Database) -> Any:
    table = db.tables.api_key
    return table.select(
        table.id,
        table.workspace_id,
        table.workspace_id.name.as_alias("workspace"),
        table.prefix,
        table.name,
        table.created_at,
        table.revoked_at,
    )


async def _find(db: Database, prefix: str) -> KeyRow | None:
    with storage_errors(f"reading API key {prefix}"):
        row = await _select(db).where(db.tables.api_key.prefix == prefix).first()
    return _key_row(row) if row else None


def _key_row(row: dict[str, Any]) -> KeyRow:
    return KeyRow(
        id=row["id"],
        workspace_id=row["workspace_id"],
        workspace=row["workspace"],
        prefix=row["prefix"],
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


# -- verifying keys --------------------------------------------------------------


def lookup_query(db: Database, prefix: str) -> First:
    """The one query that checks a presented key: its row by prefix, with
    its workspace's name (``bench/growth_data.py`` explains its plan)."""
    table = db.tables.api_key
    return (
        table.select(
            table.id,
            table.workspace_id,
            table.workspace_id.name.as_alias("workspace"),
            table.secret_hash,
            table.revoked_at,
        )
        .where(table.prefix == prefix)
        .first()
    )


class KeyVerifier:
    """Turns a presented key into a :class:`Principal`, or None.

    Verified keys are cached by their hash for ``cache_seconds`` (0: no cache)
    in a bounded, per-instance dict; refusals are never cached, so unknown keys
    cannot fill memory.  Database failures, and lookups that take longer than
    ``LOOKUP_TIMEOUT_SECONDS``, raise StorageError.
    """

    def __init__(
        self,
        db: Database,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = CACHE_MAX_ENTRIES,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal]] = {}
        """Key hash -> (expiry on ``clock``, principal); oldest first."""

    async def verify(self, secret: str) -> Principal | None:
        prefix = parse_key(secret)
        if prefix is None:
            return None
        digest = hash_key(secret)
        if self.cache_seconds > 0:
            cached = self._cache.get(digest)
            if cached is not None:
                expires, known = cached
                if self._clock() < expires:
                    return known
                del self._cache[digest]
        principal = await self._lookup(prefix, digest)
        if principal is not None and self.cache_seconds > 0:
            self._remember(digest, principal)
        return principal

    @property
    def cached_keys(self) -> int:
        """How many verified keys the cache holds (expired ones included)."""
        return len(self._cache)

    def clear(self) -> None:
        """Forget every cached key (e.g. after revoking one in this process)."""
        self._cache.clear()

    async def _lookup(self, prefix: str, digest: str) -> Principal | None:
        query = lookup_query(self.db, prefix)
        with storage_errors("looking up an API key"):
            row = await self.db.within(LOOKUP_TIMEOUT_SECONDS, query.run())
        if row is None:
            return None
        matches = hmac.compare_digest(row["secret_hash"], digest)
        if not matches or row["revoked_at"] is not None:
            return None
        return Principal(
            workspace_id=row["workspace_id"],
            workspace=row["workspace"],
            key_id=row["id"],
            key_prefix=prefix,
        )

    def _remember(self, digest: str, principal: Principal) -> None:
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]
        self._cache[digest] = (self._clock() + self.cache_seconds, principal)
