"""``sluicegate migrate``: apply pending database migrations."""

from __future__ import annotations

import argparse
import json
import sys

from sluicegate.core.db.database import Database
from sluicegate.core.errors import StorageError
from sluicegate.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply the database migrations not yet applied to "
        "SLUICEGATE_DATABASE_URL, each in its own transaction.  Safe to run "
        "again, and from two processes at once.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace, settings: Settings) -> int:
    try:
        db = await Database.connect(settings.database_url)
        try:
            applied = await db.migrate()
        finally:
            await db.close()
    except StorageError as exc:
        print(f"sluicegate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"database": db.description, "applied": applied}))
    elif applied:
        print(f"applied to {db.description}:")
        for ident in applied:
            print(f"  {ident}")
    else:
        print(f"{db.description} is up to date")
    return 0
