"""Workspaces, API keys and the usage ledger, with their constraints.

The database guards the data itself: names, key hashes, token counts and
costs are checked by CHECK constraints on both dialects.  SQLite has no regular
expressions and does not enforce VARCHAR lengths, so its checks spell the same
rules with GLOB, ``length()`` and ``typeof()``.  SQLite timestamps are ISO-8601
text in UTC (``YYYY-MM-DD HH:MM:SS.fff+00:00``), declared TIMESTAMPTZ so
Piccolo's converter reads them back as aware datetimes.

A key prefix starts with a letter, so it can never be mistaken for a numeric
key id.  ``usage (key_id, workspace_id)`` references ``api_key (id, workspace_id)``: a
ledger row can only name a key of its own workspace (a NULL key passes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1700_initial"
DESCRIPTION = "workspace, api_key and usage tables"

POSTGRES = [
    """
    CREATE TABLE workspace (
        id SERIAL PRIMARY KEY,
        name VARCHAR(63) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT workspace_name_key UNIQUE (name),
        CONSTRAINT workspace_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_-]*$')
    )
    """,
    """
    CREATE TABLE api_key (
        id SERIAL PRIMARY KEY,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        prefix VARCHAR(8) NOT NULL,
        secret_hash VARCHAR(64) NOT NULL,
        name VARCHAR(255) NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        revoked_at TIMESTAMPTZ NULL,
        CONSTRAINT api_key_prefix_key UNIQUE (prefix),
        CONSTRAINT api_key_id_workspace_key UNIQUE (id, workspace_id),
        CONSTRAINT api_key_prefix_format CHECK (prefix ~ '^[a-z][a-z0-9]{7}$'),
        CONSTRAINT api_key_secret_hash_format
            CHECK (length(secret_hash) = 64 AND secret_hash ~ '^[0-9a-f]+$')
    )
    """,
    "CREATE INDEX api_key_workspace_id_idx ON api_key (workspace_id)",
    """
    CREATE TABLE usage (
        id BIGSERIAL PRIMARY KEY,
        request_id VARCHAR(64) NOT NULL,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        key_id INTEGER NULL,
        model VARCHAR(255) NOT NULL,
        target VARCHAR(255) NULL,
        status INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_micros BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT usage_request_id_key UNIQUE (request_id),
        CONSTRAINT usage_request_id_format CHECK (length(request_id) > 0),
        CONSTRAINT usage_prompt_tokens_check CHECK (prompt_tokens >= 0),
        CONSTRAINT usage_completion_tokens_check CHECK (completion_tokens >= 0),
        CONSTRAINT usage_cached_tokens_check CHECK (cached_tokens >= 0),
        CONSTRAINT usage_cost_micros_check CHECK (cost_micros >= 0),
        CONSTRAINT usage_key_fkey FOREIGN KEY (key_id, workspace_id)
            REFERENCES api_key (id, workspace_id) ON DELETE RESTRICT
    )
    """,
    "CREATE INDEX usage_workspace_created_idx ON usage (workspace_id, created_at)",
    "CREATE INDEX usage_key_created_idx ON usage (key_id, created_at)",
]

_NOW = "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))"


def _text(column: str, max_length: int) -> str:
    """SQLite CHECK body for a text column of at most ``max_length`` characters."""
    return f"typeof({column}) = 'text' AND length({column}) <= {max_length}"


def _count(column: str) -> str:
    """SQLite CHECK body for a non-negative integer column."""
    return f"typeof({column}) = 'integer' AND {column} >= 0"


SQLITE = [
    f"""
    CREATE TABLE workspace (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name VARCHAR(63) NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        CONSTRAINT workspace_name_format CHECK (
            {_text("name", 63)}
            AND name GLOB '[a-z0-9]*'
            AND name NOT GLOB '*[^a-z0-9_-]*'
        )
    )
    """,
    f"""
    CREATE TABLE api_key (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        prefix VARCHAR(8) NOT NULL UNIQUE,
        secret_hash VARCHAR(64) NOT NULL,
        name VARCHAR(255) NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        revoked_at TIMESTAMPTZ NULL,
        UNIQUE (id, workspace_id),
        CONSTRAINT api_key_prefix_format CHECK (
            {_text("prefix", 8)}
            AND length(prefix) = 8
            AND prefix GLOB '[a-z]*'
            AND prefix NOT GLOB '*[^a-z0-9]*'
        ),
        CONSTRAINT api_key_secret_hash_format CHECK (
            {_text("secret_hash", 64)}
            AND length(secret_hash) = 64
            AND secret_hash NOT GLOB '*[^0-9a-f]*'
        ),
        CONSTRAINT api_key_name_length CHECK (name IS NULL OR {_text("name", 255)})
    )
    """,
    "CREATE INDEX api_key_workspace_id_idx ON api_key (workspace_id)",
    f"""
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id VARCHAR(64) NOT NULL UNIQUE,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        key_id INTEGER NULL,
        model VARCHAR(255) NOT NULL,
        target VARCHAR(255) NULL,
        status INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_micros BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        CONSTRAINT usage_key_fkey FOREIGN KEY (key_id, workspace_id)
            REFERENCES api_key (id, workspace_id) ON DELETE RESTRICT,
        CONSTRAINT usage_request_id_format CHECK (
            {_text("request_id", 64)} AND length(request_id) > 0
        ),
        CONSTRAINT usage_model_length CHECK ({_text("model", 255)}),
        CONSTRAINT usage_target_length
            CHECK (target IS NULL OR {_text("target", 255)}),
        CONSTRAINT usage_status_integer CHECK (typeof(status) = 'integer'),
        CONSTRAINT usage_prompt_tokens_check CHECK ({_count("prompt_tokens")}),
        CONSTRAINT usage_completion_tokens_check
            CHECK ({_count("completion_tokens")}),
        CONSTRAINT usage_cached_tokens_check CHECK ({_count("cached_tokens")}),
        CONSTRAINT usage_cost_micros_check CHECK ({_count("cost_micros")})
    )
    """,
    "CREATE INDEX usage_workspace_created_idx ON usage (workspace_id, created_at)",
    "CREATE INDEX usage_key_created_idx ON usage (key_id, created_at)",
]


async def forwards(db: Database) -> None:
    for statement in POSTGRES if db.is_postgres else SQLITE:
        await db.execute_ddl(statement)
