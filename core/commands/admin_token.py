"""``sluicegate admin-token create --workspace NAME``: a scoped admin token."""

from __future__ import annotations

import argparse

from sluicegate.core.admin_tokens import create_admin_token
from sluicegate.core.commands.output import (
    EXIT_FAILED,
    EXIT_OK,
    database,
    emit_json,
    report,
)
from sluicegate.core.errors import InvalidRequest, StorageError
from sluicegate.core.settings import Settings

SHOWN_ONCE = (
    "This token is shown only once: store it now. It may use the admin API "
    "for its workspace only."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "admin-token",
        help="create admin API tokens scoped to one workspace",
        description="A scoped token sees only its workspace in the admin API.",
    )
    actions = parser.add_subparsers(dest="admin_token_action", required=True)
    create = actions.add_parser("create", help="create a token (shown once)")
    create.add_argument("--workspace", required=True, help="the workspace's name")
    create.add_argument("--name", help="a label for the token")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=handle_create)


async def handle_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            row, token = await create_admin_token(db, args.workspace, args.name)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(
            {
                "id": row.id,
                "workspace": row.workspace,
                "prefix": row.prefix,
                "name": row.name,
                "created_at": row.created_at,
                "token": token,
                "note": SHOWN_ONCE,
            }
        )
    else:
        print(f"created admin token {row.prefix} for workspace {row.workspace!r}:")
        print(f"\n    {token}\n")
        print(SHOWN_ONCE)
    return EXIT_OK
