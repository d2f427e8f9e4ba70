"""Workspace-scoped admin tokens: created once, stored as a hash.

A token reads ``sg-admin-<prefix>-<secret>`` (the prefix is 8 lowercase
letters and digits, the secret 43 URL-safe characters).  The ``admin_token``
table keeps the prefix and the SHA-256 of the whole token; the token is shown
once, by ``sluicegate admin-token create --workspace NAME``.  A scoped token
sees only its workspace in the admin API; the operator's
``SLUICEGATE_ADMIN_TOKEN`` sees them all.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluicegate.core.db.database import Violation, storage_errors, violation_of
from sluicegate.core.errors import InvalidRequest, StorageError
from sluicegate.core.keys import generate_key, hash_key, validate_key_name
from sluicegate.core.workspaces import get_workspace

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

TOKEN_START = "sg-admin-"
_TOKEN = re.compile(r"sg-admin-([a-z][a-z0-9]{7})-([A-Za-z0-9_-]{43})")
_CREATE_ATTEMPTS = 5


@dataclass(frozen=True)
class AdminTokenRow:
    """An admin token as listed: never its secret or hash."""

    id: int
    workspace_id: int
    workspace: str
    prefix: str
    name: str | None
    created_at: datetime


async def create_admin_token(
    db: Database, workspace: str, name: str | None = None
) -> tuple[AdminTokenRow, str]:
    """A new token scoped to ``workspace``; return its row and the token."""
    name = validate_key_name(name)
    found = await get_workspace(db, workspace)
    if found is None:
        raise InvalidRequest(
            f"workspace {workspace!r} does not exist; `sluicegate workspace list` "
            "shows the workspaces",
            param="workspace",
        )
    for _ in range(_CREATE_ATTEMPTS):
        prefix, key = generate_key()
        token = TOKEN_START + key.removeprefix("sg-")
        try:
            with storage_errors(f"creating an admin token for {workspace!r}"):
                rows = await db.fetch(
                    "INSERT INTO admin_token (workspace_id, prefix, secret_hash, "
                    "name, created_at) VALUES ({}, {}, {}, {}, {}) "
                    "RETURNING id, created_at",
                    found.id,
                    prefix,
                    hash_key(token),
                    name,
                    datetime.now(UTC),
                )
        except StorageError as exc:
            if violation_of(exc) is Violation.UNIQUE:
                continue  # the prefix is taken: draw another
            raise
        row = AdminTokenRow(
            rows[0]["id"], found.id, found.name, prefix, name, rows[0]["created_at"]
        )
        return row, token
    raise StorageError(f"no free admin token prefix in {_CREATE_ATTEMPTS} attempts")


async def verify_admin_token(db: Database, token: str) -> AdminTokenRow | None:
    """The live token ``token`` names, or None (compared in constant time)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    with storage_errors("looking up an admin token"):
        rows = await db.fetch(
            "SELECT t.id, t.workspace_id, w.name AS workspace, t.prefix, t.name, "
            "t.created_at, t.secret_hash, t.revoked_at FROM admin_token t "
            "JOIN workspace w ON w.id = t.workspace_id WHERE t.prefix = {}",
            match.group(1),
        )
    if not rows or rows[0]["revoked_at"] is not None:
        return None
    row = rows[0]
    if not hmac.compare_digest(row["secret_hash"], hash_key(token)):
        return None
    return AdminTokenRow(
        row["id"],
        row["workspace_id"],
        row["workspace"],
        row["prefix"],
        row["name"],
        row["created_at"],
    )
