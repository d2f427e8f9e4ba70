"""Retention: checkpoints that let old audit records go, and retention policies.

* ``audit_checkpoint``: where a workspace's chain continues after its oldest
  records were dropped: the last dropped ``seq`` and its ``hash``, and
  ``explained_by``, the request id of the ``retention`` audit record (later in
  the chain) that says so.  Append-only.
* ``retention_policy``: per workspace, how many days payloads and records are
  kept (NULL: for ever).  Set by ``sluicegate retention set`` or the admin API.

The guards of :mod:`.m20261203_1810_audit` are replaced so that records, and
the deletion grants pointing at them, may be deleted *only* while a
checkpoint covering them is in progress: written by the same transaction and
not yet closed.  A checkpoint is accepted only if it names a stored record by
its seq and hash, moves past the workspace's previous checkpoint and is
explained by a ``retention`` record after it; the transaction closes it
(``in_progress`` true to false, the only change a checkpoint accepts) before
committing.  On PostgreSQL a checkpoint also carries the id of the
transaction that wrote it, so one left open by a crash or by hand covers
nothing afterwards; on SQLite ``sluicegate audit verify`` reports a
checkpoint left open.  Nothing else can delete a record.

The trigger names of the audit migration are kept (``audit_record_no_change``
now refuses every UPDATE and every DELETE not covered by a checkpoint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1840_retention"
DESCRIPTION = "audit checkpoints, retention policies, guarded record deletion"

POSTGRES_TABLES = [
    """
    CREATE TABLE audit_checkpoint (
        id BIGSERIAL PRIMARY KEY,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq BIGINT NOT NULL,
        hash CHAR(64) NOT NULL,
        explained_by VARCHAR(64) NOT NULL,
        in_progress BOOLEAN NOT NULL DEFAULT TRUE,
        txid BIGINT NOT NULL DEFAULT txid_current(),
        created_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT audit_checkpoint_seq_key UNIQUE (workspace_id, seq),
        CONSTRAINT audit_checkpoint_seq_check CHECK (seq >= 1),
        CONSTRAINT audit_checkpoint_hash_format CHECK (hash ~ '^[0-9a-f]{64}$')
    )
    """,
    """
    CREATE TABLE retention_policy (
        workspace_id INTEGER PRIMARY KEY
            REFERENCES workspace (id) ON DELETE CASCADE,
        payload_days INTEGER NULL,
        record_days INTEGER NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT retention_policy_days_check
            CHECK (payload_days >= 1 AND record_days >= 1)
    )
    """,
]

_COVERED = """
    EXISTS (
        SELECT 1 FROM audit_checkpoint c
        WHERE c.workspace_id = {workspace} AND c.seq >= {seq}
            AND c.in_progress AND c.txid = txid_current()
    )
"""

POSTGRES_FUNCTIONS = [
    f"""
    CREATE FUNCTION audit_record_guard_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE'
            AND {_COVERED.format(workspace="OLD.workspace_id", seq="OLD.seq")}
        THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit table audit_record: % is refused; the audit '
            'trail is append-only (retention drops records only behind a '
            'checkpoint written in the same transaction)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    f"""
    CREATE FUNCTION audit_grant_guard_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        explaining audit_record%ROWTYPE;
    BEGIN
        SELECT * INTO explaining FROM audit_record
            WHERE request_id = OLD.granted_by;
        IF TG_OP = 'DELETE' AND FOUND
            AND {
        _COVERED.format(workspace="explaining.workspace_id", seq="explaining.seq")
    }
        THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit table audit_deletion_grant: % is refused; '
            'grants are append-only (one goes only with the record that '
            'granted it, behind a checkpoint)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE FUNCTION audit_checkpoint_guard_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        NEW.in_progress := TRUE;
        NEW.txid := txid_current();
        IF NOT EXISTS (
            SELECT 1 FROM audit_record
            WHERE workspace_id = NEW.workspace_id AND seq = NEW.seq
                AND hash = NEW.hash
        ) THEN
            RAISE EXCEPTION 'audit checkpoint refused: workspace % has no '
                'record with seq % and hash %', NEW.workspace_id, NEW.seq,
                NEW.hash USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (
            SELECT 1 FROM audit_checkpoint
            WHERE workspace_id = NEW.workspace_id AND seq >= NEW.seq
        ) THEN
            RAISE EXCEPTION 'audit checkpoint refused: seq % does not move '
                'past the last checkpoint of workspace %', NEW.seq,
                NEW.workspace_id USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM audit_record
            WHERE request_id = NEW.explained_by
                AND workspace_id = NEW.workspace_id
                AND kind = 'retention' AND seq > NEW.seq
        ) THEN
            RAISE EXCEPTION 'audit checkpoint refused: % is not a retention '
                'record after seq % of workspace %', NEW.explained_by,
                NEW.seq, NEW.workspace_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE FUNCTION audit_checkpoint_guard_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.in_progress AND NOT NEW.in_progress
            AND OLD.txid = txid_current()
            AND to_jsonb(NEW) - 'in_progress' = to_jsonb(OLD) - 'in_progress'
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit table audit_checkpoint: % is refused; '
            'checkpoints are append-only (only the transaction that wrote one '
            'closes it)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
]


def _postgres_trigger(
    name: str, when: str, table: str, level: str, function: str
) -> list[str]:
    return [
        f"CREATE TRIGGER {name} {when} ON {table} FOR EACH {level} "
        f"EXECUTE FUNCTION {function}()",
        f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}",
    ]


POSTGRES_TRIGGERS = [
    "DROP TRIGGER audit_record_no_change ON audit_record",
    *_postgres_trigger(
        "audit_record_no_change",
        "BEFORE UPDATE OR DELETE",
        "audit_record",
        "ROW",
        "audit_record_guard_change",
    ),
    "DROP TRIGGER audit_grant_no_change ON audit_deletion_grant",
    *_postgres_trigger(
        "audit_grant_no_change",
        "BEFORE UPDATE OR DELETE",
        "audit_deletion_grant",
        "ROW",
        "audit_grant_guard_change",
    ),
    *_postgres_trigger(
        "audit_checkpoint_guard_insert",
        "BEFORE INSERT",
        "audit_checkpoint",
        "ROW",
        "audit_checkpoint_guard_insert",
    ),
    *_postgres_trigger(
        "audit_checkpoint_no_change",
        "BEFORE UPDATE OR DELETE",
        "audit_checkpoint",
        "ROW",
        "audit_checkpoint_guard_change",
    ),
    *_postgres_trigger(
        "audit_checkpoint_no_truncate",
        "BEFORE TRUNCATE",
        "audit_checkpoint",
        "STATEMENT",
        "audit_refuse_change",
    ),
]

SQLITE_TABLES = [
    """
    CREATE TABLE audit_checkpoint (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id INTEGER NOT NULL
            REFERENCES workspace (id) ON DELETE RESTRICT,
        seq INTEGER NOT NULL,
        hash CHAR(64) NOT NULL,
        explained_by VARCHAR(64) NOT NULL,
        in_progress INTEGER NOT NULL DEFAULT 1,
        created_at TIMESTAMPTZ NOT NULL,
        UNIQUE (workspace_id, seq),
        CONSTRAINT audit_checkpoint_seq_check
            CHECK (typeof(seq) = 'integer' AND seq >= 1),
        CONSTRAINT audit_checkpoint_hash_format
            CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
        CONSTRAINT audit_checkpoint_in_progress_check CHECK (in_progress IN (0, 1))
    )
    """,
    """
    CREATE TABLE retention_policy (
        workspace_id INTEGER PRIMARY KEY
            REFERENCES workspace (id) ON DELETE CASCADE,
        payload_days INTEGER NULL,
        record_days INTEGER NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT retention_policy_days_check
            CHECK (payload_days >= 1 AND record_days >= 1)
    )
    """,
]

_SQLITE_COVERED = (
    "EXISTS (SELECT 1 FROM audit_checkpoint c WHERE c.workspace_id = {workspace} "
    "AND c.seq >= {seq} AND c.in_progress = 1)"
)


def _sqlite_guard(name: str, when: str, table: str, refuse_if: str, why: str) -> str:
    return (
        f"CREATE TRIGGER {name} {when} ON {table} WHEN {refuse_if} "
        f"BEGIN SELECT RAISE(ABORT, '{why}'); END"
    )


SQLITE_TRIGGERS = [
    "DROP TRIGGER audit_record_no_delete",
    _sqlite_guard(
        "audit_record_no_delete",
        "BEFORE DELETE",
        "audit_record",
        "NOT " + _SQLITE_COVERED.format(workspace="OLD.workspace_id", seq="OLD.seq"),
        "audit table audit_record: DELETE is refused; the audit trail is "
        "append-only (retention drops records only behind a checkpoint written "
        "in the same transaction)",
    ),
    "DROP TRIGGER audit_grant_no_delete",
    _sqlite_guard(
        "audit_grant_no_delete",
        "BEFORE DELETE",
        "audit_deletion_grant",
        "NOT EXISTS (SELECT 1 FROM audit_record r WHERE r.request_id = "
        "OLD.granted_by AND "
        + _SQLITE_COVERED.format(workspace="r.workspace_id", seq="r.seq")
        + ")",
        "audit table audit_deletion_grant: DELETE is refused; grants are "
        "append-only (one goes only with the record that granted it)",
    ),
    _sqlite_guard(
        "audit_checkpoint_names_a_record",
        "BEFORE INSERT",
        "audit_checkpoint",
        "NEW.in_progress != 1 OR NOT EXISTS (SELECT 1 FROM audit_record "
        "WHERE workspace_id = NEW.workspace_id AND seq = NEW.seq "
        "AND hash = NEW.hash)",
        "audit checkpoint refused: it must be in progress and name a stored "
        "record by seq and hash",
    ),
    _sqlite_guard(
        "audit_checkpoint_moves_forward",
        "BEFORE INSERT",
        "audit_checkpoint",
        "EXISTS (SELECT 1 FROM audit_checkpoint WHERE workspace_id = "
        "NEW.workspace_id AND seq >= NEW.seq)",
        "audit checkpoint refused: it does not move past the last checkpoint",
    ),
    _sqlite_guard(
        "audit_checkpoint_is_explained",
        "BEFORE INSERT",
        "audit_checkpoint",
        "NOT EXISTS (SELECT 1 FROM audit_record WHERE request_id = "
        "NEW.explained_by AND workspace_id = NEW.workspace_id "
        "AND kind = 'retention' AND seq > NEW.seq)",
        "audit checkpoint refused: explained_by must be a retention record "
        "after the checkpoint",
    ),
    _sqlite_guard(
        "audit_checkpoint_no_update",
        "BEFORE UPDATE",
        "audit_checkpoint",
        "NOT (OLD.in_progress = 1 AND NEW.in_progress = 0 AND NEW.id = OLD.id "
        "AND NEW.workspace_id = OLD.workspace_id AND NEW.seq = OLD.seq "
        "AND NEW.hash = OLD.hash AND NEW.explained_by = OLD.explained_by "
        "AND NEW.created_at = OLD.created_at)",
        "audit table audit_checkpoint: UPDATE is refused; checkpoints are "
        "append-only (only the transaction that wrote one closes it)",
    ),
    _sqlite_guard(
        "audit_checkpoint_no_delete",
        "BEFORE DELETE",
        "audit_checkpoint",
        "1",
        "audit table audit_checkpoint: DELETE is refused; checkpoints are append-only",
    ),
]

INDEXES = [
    "CREATE INDEX audit_grant_granted_by_idx ON audit_deletion_grant (granted_by)",
]


async def forwards(db: Database) -> None:
    if db.is_postgres:
        statements = POSTGRES_TABLES + POSTGRES_FUNCTIONS + POSTGRES_TRIGGERS
    else:
        statements = SQLITE_TABLES + SQLITE_TRIGGERS
    for statement in statements + INDEXES:
        await db.execute_ddl(statement)
