"""The audit trail: append-only records, their payloads, chain heads, grants.

* ``audit_record``: one row per request (or per audit event such as an
  erasure), chained per workspace: ``seq`` counts 1, 2, 3... without gaps,
  ``prev_hash`` is the hash of the record before, ``hash`` the SHA-256 of
  ``record``, the canonical JSON of every field (:mod:`sluicegate.core.audit.record`).
* ``audit_payload``: the request and response bodies of a record (stored whole
  or redacted), apart from the chain so they can be deleted while the chain
  still verifies.
* ``audit_chain_head``: the last ``seq`` and ``hash`` of each workspace; the
  row a writer locks to append.  It is the only audit table that may change.
* ``audit_deletion_grant``: the only path to deleting a payload.  A payload row
  may be deleted only once a grant row names it; grants are append-only and
  name the audit record that explains the deletion.

Triggers refuse UPDATE and DELETE of records and grants, UPDATE of payloads,
DELETE of payloads without a grant and, on PostgreSQL, TRUNCATE of all three.
On PostgreSQL they are ``ENABLE ALWAYS``, so they also fire for sessions with
``session_replication_role = replica``.  They do not stop the table owner from
dropping or disabling them: the application should run as a role that does
not own these tables (README, "Audit trail").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1810_audit"
DESCRIPTION = "append-only audit_record chain, audit_payload, heads and grants"

GENESIS = "0" * 64

POSTGRES_TABLES = [
    """
    CREATE TABLE audit_record (
        id BIGSERIAL PRIMARY KEY,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq BIGINT NOT NULL,
        request_id VARCHAR(64) NOT NULL,
        kind VARCHAR(32) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        prev_hash CHAR(64) NOT NULL,
        hash CHAR(64) NOT NULL,
        record TEXT NOT NULL,
        CONSTRAINT audit_record_request_id_key UNIQUE (request_id),
        CONSTRAINT audit_record_seq_key UNIQUE (workspace_id, seq),
        CONSTRAINT audit_record_seq_check CHECK (seq >= 1),
        CONSTRAINT audit_record_hash_format
            CHECK (hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$')
    )
    """,
    "CREATE INDEX audit_record_created_idx ON audit_record (workspace_id, created_at)",
    """
    CREATE TABLE audit_payload (
        id BIGSERIAL PRIMARY KEY,
        request_id VARCHAR(64) NOT NULL
            REFERENCES audit_record (request_id) ON DELETE RESTRICT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        subject VARCHAR(255) NULL,
        policy VARCHAR(16) NOT NULL,
        request_body TEXT NOT NULL,
        response_body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT audit_payload_request_id_key UNIQUE (request_id),
        CONSTRAINT audit_payload_policy_check CHECK (policy IN ('store', 'redact'))
    )
    """,
    "CREATE INDEX audit_payload_subject_idx ON audit_payload (workspace_id, subject)",
    "CREATE INDEX audit_payload_time_idx ON audit_payload (workspace_id, created_at)",
    f"""
    CREATE TABLE audit_chain_head (
        workspace_id INTEGER PRIMARY KEY
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq BIGINT NOT NULL DEFAULT 0,
        hash CHAR(64) NOT NULL DEFAULT '{GENESIS}',
        CONSTRAINT audit_chain_head_seq_check CHECK (seq >= 0)
    )
    """,
    """
    CREATE TABLE audit_deletion_grant (
        id BIGSERIAL PRIMARY KEY,
        payload_request_id VARCHAR(64) NOT NULL,
        granted_by VARCHAR(64) NOT NULL
            REFERENCES audit_record (request_id) ON DELETE RESTRICT,
        reason VARCHAR(32) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT audit_deletion_grant_payload_key UNIQUE (payload_request_id)
    )
    """,
]

POSTGRES_FUNCTIONS = [
    """
    CREATE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit table %: % is refused; the audit trail is '
            'append-only (payloads are deleted only through retention or '
            'erasure, which write a deletion grant first)', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE FUNCTION audit_payload_guard_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM audit_deletion_grant
            WHERE payload_request_id = OLD.request_id
        ) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit table audit_payload: DELETE of the payload of % '
            'is refused: no deletion grant names it', OLD.request_id
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
]


def _postgres_triggers() -> list[str]:
    refuse = "EXECUTE FUNCTION audit_refuse_change()"
    triggers = {
        "audit_record_no_change": (
            "audit_record",
            "BEFORE UPDATE OR DELETE",
            "ROW",
            refuse,
        ),
        "audit_record_no_truncate": (
            "audit_record",
            "BEFORE TRUNCATE",
            "STATEMENT",
            refuse,
        ),
        "audit_payload_no_update": ("audit_payload", "BEFORE UPDATE", "ROW", refuse),
        "audit_payload_granted_delete": (
            "audit_payload",
            "BEFORE DELETE",
            "ROW",
            "EXECUTE FUNCTION audit_payload_guard_delete()",
        ),
        "audit_payload_no_truncate": (
            "audit_payload",
            "BEFORE TRUNCATE",
            "STATEMENT",
            refuse,
        ),
        "audit_grant_no_change": (
            "audit_deletion_grant",
            "BEFORE UPDATE OR DELETE",
            "ROW",
            refuse,
        ),
        "audit_grant_no_truncate": (
            "audit_deletion_grant",
            "BEFORE TRUNCATE",
            "STATEMENT",
            refuse,
        ),
    }
    statements = []
    for name, (table, when, level, action) in triggers.items():
        statements.append(
            f"CREATE TRIGGER {name} {when} ON {table} FOR EACH {level} {action}"
        )
        statements.append(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
    return statements


_NOW = "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))"

SQLITE_TABLES = [
    """
    CREATE TABLE audit_record (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq INTEGER NOT NULL,
        request_id VARCHAR(64) NOT NULL UNIQUE,
        kind VARCHAR(32) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        prev_hash CHAR(64) NOT NULL,
        hash CHAR(64) NOT NULL,
        record TEXT NOT NULL,
        UNIQUE (workspace_id, seq),
        CONSTRAINT audit_record_seq_check
            CHECK (typeof(seq) = 'integer' AND seq >= 1),
        CONSTRAINT audit_record_hash_format CHECK (
            length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'
            AND length(prev_hash) = 64 AND prev_hash NOT GLOB '*[^0-9a-f]*'
        )
    )
    """,
    "CREATE INDEX audit_record_created_idx ON audit_record (workspace_id, created_at)",
    """
    CREATE TABLE audit_payload (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id VARCHAR(64) NOT NULL UNIQUE
            REFERENCES audit_record (request_id) ON DELETE RESTRICT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        subject VARCHAR(255) NULL,
        policy VARCHAR(16) NOT NULL,
        request_body TEXT NOT NULL,
        response_body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT audit_payload_policy_check CHECK (policy IN ('store', 'redact'))
    )
    """,
    "CREATE INDEX audit_payload_subject_idx ON audit_payload (workspace_id, subject)",
    "CREATE INDEX audit_payload_time_idx ON audit_payload (workspace_id, created_at)",
    f"""
    CREATE TABLE audit_chain_head (
        workspace_id INTEGER PRIMARY KEY
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq INTEGER NOT NULL DEFAULT 0,
        hash CHAR(64) NOT NULL DEFAULT '{GENESIS}',
        CONSTRAINT audit_chain_head_seq_check
            CHECK (typeof(seq) = 'integer' AND seq >= 0)
    )
    """,
    f"""
    CREATE TABLE audit_deletion_grant (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        payload_request_id VARCHAR(64) NOT NULL UNIQUE,
        granted_by VARCHAR(64) NOT NULL
            REFERENCES audit_record (request_id) ON DELETE RESTRICT,
        reason VARCHAR(32) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW}
    )
    """,
]


def _sqlite_refusal(name: str, when: str, table: str, condition: str = "") -> str:
    message = (
        f"audit table {table}: {when.split()[-1]} is refused; the audit trail "
        "is append-only"
    )
    return (
        f"CREATE TRIGGER {name} {when} ON {table} {condition} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


SQLITE_TRIGGERS = [
    _sqlite_refusal("audit_record_no_update", "BEFORE UPDATE", "audit_record"),
    _sqlite_refusal("audit_record_no_delete", "BEFORE DELETE", "audit_record"),
    _sqlite_refusal("audit_payload_no_update", "BEFORE UPDATE", "audit_payload"),
    _sqlite_refusal(
        "audit_payload_granted_delete",
        "BEFORE DELETE",
        "audit_payload",
        "WHEN NOT EXISTS (SELECT 1 FROM audit_deletion_grant "
        "WHERE payload_request_id = OLD.request_id)",
    ),
    _sqlite_refusal("audit_grant_no_update", "BEFORE UPDATE", "audit_deletion_grant"),
    _sqlite_refusal("audit_grant_no_delete", "BEFORE DELETE", "audit_deletion_grant"),
]


async def forwards(db: Database) -> None:
    if db.is_postgres:
        statements = POSTGRES_TABLES + POSTGRES_FUNCTIONS + _postgres_triggers()
    else:
        statements = SQLITE_TABLES + SQLITE_TRIGGERS
    for statement in statements:
        await db.execute_ddl(statement)
