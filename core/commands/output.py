"""What every command shares: exit statuses, error and data output, the database.

Exit statuses are 0 (success), 1 (a finding or a failure) and 2 (bad usage).
Data goes to stdout as aligned columns or, with ``--json``, as JSON; errors go
to stderr as ``sluicegate: <message>``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sluicegate.core.db.database import Database
from sluicegate.core.db.migrate import ready_database
from sluicegate.core.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def database(settings: Settings) -> AbstractAsyncContextManager[Database]:
    """The configured database, ready for use (SQLite is migrated on the way)."""
    return ready_database(settings.database_url, auto_migrate=settings.uses_sqlite)


def report(error: Exception, status: int) -> int:
    """Print ``sluicegate: <message>`` to stderr; return ``status``."""
    message = getattr(error, "message", None) or str(error)
    print(f"sluicegate: {message}", file=sys.stderr)
    return status


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON (datetimes as ISO 8601)."""
    print(json.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as aligned columns under ``headers``."""
    cells = [list(headers)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)
