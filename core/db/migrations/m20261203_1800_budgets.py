"""Budget holds: reservations of requests in flight, for the embedded store.

``budget_hold`` has one row per (counter, request id): the amount reserved on
that counter until the request settles, or until ``expires_at`` if it never
does (a crashed process).  The usage ledger and these rows together are what
the SQL budget store admits against.  Redis deployments keep their holds in
Redis and use this table only when Redis is down and a budget fails open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluicegate.core.db.database import Database

ID = "20261203_1800_budgets"
DESCRIPTION = "budget_hold table (reservations of requests in flight)"

POSTGRES = [
    """
    CREATE TABLE budget_hold (
        counter VARCHAR(255) NOT NULL,
        request_id VARCHAR(64) NOT NULL,
        amount BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT budget_hold_pkey PRIMARY KEY (counter, request_id),
        CONSTRAINT budget_hold_amount_check CHECK (amount >= 0)
    )
    """,
    "CREATE INDEX budget_hold_request_idx ON budget_hold (request_id)",
    "CREATE INDEX budget_hold_expires_idx ON budget_hold (expires_at)",
]

SQLITE = [
    """
    CREATE TABLE budget_hold (
        counter VARCHAR(255) NOT NULL,
        request_id VARCHAR(64) NOT NULL,
        amount INTEGER NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (counter, request_id),
        CONSTRAINT budget_hold_amount_check
            CHECK (typeof(amount) = 'integer' AND amount >= 0),
        CONSTRAINT budget_hold_counter_length
            CHECK (typeof(counter) = 'text' AND length(counter) <= 255)
    )
    """,
    "CREATE INDEX budget_hold_request_idx ON budget_hold (request_id)",
    "CREATE INDEX budget_hold_expires_idx ON budget_hold (expires_at)",
]


async def forwards(db: Database) -> None:
    for statement in POSTGRES if db.is_postgres else SQLITE:
        await db.execute_ddl(statement)
