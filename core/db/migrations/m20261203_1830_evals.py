"""Evaluation runs, their results, risk scores and deferred evaluation jobs.

* ``evaluation_run``: one evaluator at one version with one configuration
  (``config_hash``) over one selection of requests.  A *live* run collects the
  results of every request a workspace's ``eval_enqueue`` stage queued with
  that evaluator, version and configuration (``live_key`` names it, so there
  is one per combination); a *rerun* is made by ``sluicegate evals rerun``.
* ``evaluation_result``: one evaluator's verdict on one request within a run
  (a score and labels, or the error that stopped the evaluator).
* ``evaluation_risk``: the risk score of a request, combined from its live
  results with the workspace's weights.
* ``evaluation_deferred``: jobs that could not be queued (the queue was
  unreachable), kept until a re-queuer hands them to the queue again.

Runs, results and risk scores are never changed: triggers refuse UPDATE and
DELETE (and TRUNCATE on PostgreSQL, where they are ``ENABLE ALWAYS``).  A
re-evaluation is a new run; earlier results stay as they were.  Deferred jobs
are a work queue and are deleted once queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1830_evals"
DESCRIPTION = "append-only evaluation runs, results and risk; deferred eval jobs"

IMMUTABLE = ("evaluation_run", "evaluation_result", "evaluation_risk")

POSTGRES_TABLES = [
    """
    CREATE TABLE evaluation_run (
        id BIGSERIAL PRIMARY KEY,
        evaluator VARCHAR(64) NOT NULL,
        version VARCHAR(32) NOT NULL,
        config_hash CHAR(64) NOT NULL,
        config TEXT NOT NULL,
        kind VARCHAR(8) NOT NULL,
        workspace_id INTEGER NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        selection TEXT NOT NULL,
        live_key VARCHAR(255) NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT evaluation_run_live_key UNIQUE (live_key),
        CONSTRAINT evaluation_run_kind_check CHECK (kind IN ('live', 'rerun')),
        CONSTRAINT evaluation_run_live_check
            CHECK ((kind = 'live') = (live_key IS NOT NULL))
    )
    """,
    """
    CREATE TABLE evaluation_result (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL REFERENCES evaluation_run (id) ON DELETE RESTRICT,
        request_id VARCHAR(64) NOT NULL,
        workspace_id INTEGER NOT NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        score DOUBLE PRECISION NULL,
        labels TEXT NOT NULL,
        detail TEXT NULL,
        error TEXT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT evaluation_result_once UNIQUE (run_id, request_id),
        CONSTRAINT evaluation_result_score_check CHECK (
            (error IS NULL AND score >= 0 AND score <= 1)
            OR (error IS NOT NULL AND score IS NULL)
        )
    )
    """,
    "CREATE INDEX evaluation_result_request_idx ON evaluation_result (request_id)",
    """
    CREATE TABLE evaluation_risk (
        id BIGSERIAL PRIMARY KEY,
        request_id VARCHAR(64) NOT NULL,
        workspace_id INTEGER NOT NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        score DOUBLE PRECISION NOT NULL,
        components TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CONSTRAINT evaluation_risk_request_key UNIQUE (request_id),
        CONSTRAINT evaluation_risk_score_check CHECK (score >= 0 AND score <= 1)
    )
    """,
    """
    CREATE TABLE evaluation_deferred (
        id BIGSERIAL PRIMARY KEY,
        request_id VARCHAR(64) NOT NULL,
        job TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE FUNCTION evaluation_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'evaluation table %: % is refused; evaluation runs, '
            'results and risk scores are never changed (re-evaluate with '
            '`sluicegate evals rerun`, which makes a new run)', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
]


def _postgres_triggers() -> list[str]:
    statements = []
    for table in IMMUTABLE:
        for name, when, level in (
            (f"{table}_no_change", "BEFORE UPDATE OR DELETE", "ROW"),
            (f"{table}_no_truncate", "BEFORE TRUNCATE", "STATEMENT"),
        ):
            statements.append(
                f"CREATE TRIGGER {name} {when} ON {table} FOR EACH {level} "
                "EXECUTE FUNCTION evaluation_refuse_change()"
            )
            statements.append(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
    return statements


_NOW = "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))"

SQLITE_TABLES = [
    f"""
    CREATE TABLE evaluation_run (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        evaluator VARCHAR(64) NOT NULL,
        version VARCHAR(32) NOT NULL,
        config_hash CHAR(64) NOT NULL,
        config TEXT NOT NULL,
        kind VARCHAR(8) NOT NULL,
        workspace_id INTEGER NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        selection TEXT NOT NULL,
        live_key VARCHAR(255) NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        CONSTRAINT evaluation_run_kind_check CHECK (kind IN ('live', 'rerun')),
        CONSTRAINT evaluation_run_live_check
            CHECK ((kind = 'live') = (live_key IS NOT NULL))
    )
    """,
    f"""
    CREATE TABLE evaluation_result (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES evaluation_run (id) ON DELETE RESTRICT,
        request_id VARCHAR(64) NOT NULL,
        workspace_id INTEGER NOT NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        score DOUBLE PRECISION NULL,
        labels TEXT NOT NULL,
        detail TEXT NULL,
        error TEXT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        UNIQUE (run_id, request_id),
        CONSTRAINT evaluation_result_score_check CHECK (
            (error IS NULL AND score >= 0 AND score <= 1)
            OR (error IS NOT NULL AND score IS NULL)
        )
    )
    """,
    "CREATE INDEX evaluation_result_request_idx ON evaluation_result (request_id)",
    f"""
    CREATE TABLE evaluation_risk (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id VARCHAR(64) NOT NULL UNIQUE,
        workspace_id INTEGER NOT NULL REFERENCES workspace (id) ON DELETE RESTRICT,
        score DOUBLE PRECISION NOT NULL,
        components TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW},
        CONSTRAINT evaluation_risk_score_check CHECK (score >= 0 AND score <= 1)
    )
    """,
    f"""
    CREATE TABLE evaluation_deferred (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id VARCHAR(64) NOT NULL,
        job TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT {_NOW}
    )
    """,
]


def _sqlite_triggers() -> list[str]:
    statements = []
    for table in IMMUTABLE:
        for operation in ("UPDATE", "DELETE"):
            message = (
                f"evaluation table {table}: {operation} is refused; evaluation "
                "runs, results and risk scores are never changed"
            )
            statements.append(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} "
                f"ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
    return statements


async def forwards(db: Database) -> None:
    if db.is_postgres:
        statements = POSTGRES_TABLES + _postgres_triggers()
    else:
        statements = SQLITE_TABLES + _sqlite_triggers()
    for statement in statements:
        await db.execute_ddl(statement)
