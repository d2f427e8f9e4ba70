"""Workspace-scoped admin tokens.

``admin_token`` holds tokens of the admin API that may see one workspace
only (the operator's ``SLUICEGATE_ADMIN_TOKEN`` sees every workspace and is
never stored).  Like API keys, a token is kept as a lookup prefix and the
SHA-256 of the whole token, never the token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1820_admin"
DESCRIPTION = "admin_token table (workspace-scoped admin API tokens)"

POSTGRES = [
    """
    CREATE TABLE admin_token (
        id SERIAL PRIMARY KEY,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        prefix VARCHAR(8) NOT NULL,
        secret_hash VARCHAR(64) NOT NULL,
        name VARCHAR(255) NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ NULL,
        CONSTRAINT admin_token_prefix_key UNIQUE (prefix),
        CONSTRAINT admin_token_prefix_format CHECK (prefix ~ '^[a-z][a-z0-9]{7}$'),
        CONSTRAINT admin_token_secret_hash_format
            CHECK (secret_hash ~ '^[0-9a-f]{64}$')
    )
    """,
]

SQLITE = [
    """
    CREATE TABLE admin_token (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        prefix VARCHAR(8) NOT NULL UNIQUE,
        secret_hash VARCHAR(64) NOT NULL,
        name VARCHAR(255) NULL,
        created_at TIMESTAMPTZ NOT NULL
            DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
        revoked_at TIMESTAMPTZ NULL,
        CONSTRAINT admin_token_prefix_format CHECK (
            typeof(prefix) = 'text' AND length(prefix) = 8
            AND prefix GLOB '[a-z]*' AND prefix NOT GLOB '*[^a-z0-9]*'
        ),
        CONSTRAINT admin_token_secret_hash_format CHECK (
            typeof(secret_hash) = 'text' AND length(secret_hash) = 64
            AND secret_hash NOT GLOB '*[^0-9a-f]*'
        )
    )
    """,
]


async def forwards(db: Database) -> None:
    for statement in POSTGRES if db.is_postgres else SQLITE:
        await db.execute_ddl(statement)
