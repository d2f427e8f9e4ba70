"""Piccolo table classes, bound to one engine per :class:`Database`.

Piccolo usually binds every table to one process-wide engine found through
``piccolo_conf.py``.  sluicegate does not: a process may hold two databases at
once (tests run SQLite and PostgreSQL side by side), so the columns live in
plain mixin classes and :func:`bind_tables` creates fresh ``Table`` subclasses
with ``db=engine`` for each engine.  Piccolo copies mixin columns into each
subclass, so bound classes never share column objects.

The schema itself (types, constraints, indexes) is created by the migrations in
:mod:`sluicegate.core.db.migrations`, never by ``create_table()``: these classes
only describe the columns for queries and must agree with the migrations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from piccolo.columns import (
    BigInt,
    BigSerial,
    ForeignKey,
    Integer,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.table import TABLE_REGISTRY, Table

if TYPE_CHECKING:
    from piccolo.engine.base import Engine


class WorkspaceColumns:
    """``workspace``: a tenant; API keys, usage and pipelines belong to one."""

    name = Varchar(length=63, unique=True)
    created_at = Timestamptz()


class ApiKeyColumns:
    """``api_key``: a lookup prefix and the SHA-256 of the whole key, never the key."""

    prefix = Varchar(length=8, unique=True)
    secret_hash = Varchar(length=64, secret=True)
    name = Varchar(length=255, null=True, default=None)
    created_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)


class UsageColumns:
    """``usage``: the ledger, one row per request id; the truth behind budgets."""

    id = BigSerial(primary_key=True)
    request_id = Varchar(length=64, unique=True)
    model = Varchar(length=255)
    target = Varchar(length=255, null=True, default=None)
    status = Integer()
    prompt_tokens = Integer(default=0)
    completion_tokens = Integer(default=0)
    cached_tokens = Integer(default=0)
    cost_micros = BigInt(default=0)
    """The cost in millionths of a US dollar."""
    created_at = Timestamptz()


if TYPE_CHECKING:
    # What the bound classes look like, for the type checker only; at run time
    # bind_tables() creates them.
    from piccolo.columns import Serial

    class WorkspaceTable(WorkspaceColumns, Table):
        id: Serial

    class ApiKeyTable(ApiKeyColumns, Table):
        id: Serial
        workspace_id: ForeignKey[WorkspaceTable]

    class UsageTable(UsageColumns, Table):
        workspace_id: ForeignKey[WorkspaceTable]
        key_id: ForeignKey[ApiKeyTable]


@dataclass(frozen=True)
class Tables:
    """The table classes of one engine."""

    workspace: type[WorkspaceTable]
    api_key: type[ApiKeyTable]
    usage: type[UsageTable]

    def all(self) -> tuple[type[Table], ...]:
        return (self.workspace, self.api_key, self.usage)


def bind_tables(engine: Engine[Any]) -> Tables:
    """Create the table classes bound to ``engine`` (nothing global is touched
    except Piccolo's registry list; :func:`unregister_tables` undoes that)."""

    class Workspace(WorkspaceColumns, Table, db=engine, tablename="workspace"):
        pass

    class ApiKey(ApiKeyColumns, Table, db=engine, tablename="api_key"):
        workspace_id = ForeignKey(
            references=Workspace, null=False, on_delete=OnDelete.restrict
        )

    class Usage(UsageColumns, Table, db=engine, tablename="usage"):
        workspace_id = ForeignKey(
            references=Workspace, null=False, on_delete=OnDelete.restrict
        )
        key_id = ForeignKey(
            references=ApiKey, null=True, default=None, on_delete=OnDelete.restrict
        )

    return Tables(workspace=Workspace, api_key=ApiKey, usage=Usage)  # type: ignore[arg-type]


def unregister_tables(tables: Tables) -> None:
    """Drop the classes from Piccolo's module-level ``TABLE_REGISTRY``.

    Piccolo appends every Table subclass to that list (only its tooling reads
    it); without this, each connect/close cycle would keep three classes alive.
    """
    ours = set(tables.all())
    TABLE_REGISTRY[:] = [table for table in TABLE_REGISTRY if table not in ours]
