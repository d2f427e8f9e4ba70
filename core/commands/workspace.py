"""``sluicegate workspace create NAME`` and ``sluicegate workspace list``.

Also the small output helpers the data commands share (:func:`emit_json`,
:func:`emit_table`, :func:`report`).
"""

from __future__ import annotations

import argparse
from typing import Any

from sluicegate.core.commands.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    database,
    emit_json,
    emit_table,
    report,
)
from sluicegate.core.errors import InvalidRequest, StorageError
from sluicegate.core.settings import Settings
from sluicegate.core.workspaces import (
    WorkspaceRow,
    create_workspace,
    list_workspaces,
    validate_name,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "workspace",
        help="create and list workspaces",
        description="Workspaces own API keys, usage and a pipeline.",
    )
    actions = parser.add_subparsers(dest="workspace_action", required=True)

    create = actions.add_parser("create", help="create a workspace")
    create.add_argument(
        "name",
        help="1-63 lowercase letters, digits, '-' and '_'; starts with a "
        "letter or digit",
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=handle_create)

    listing = actions.add_parser("list", help="list workspaces")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=handle_list)


async def handle_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        validate_name(args.name)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    try:
        async with database(settings) as db:
            row = await create_workspace(db, args.name)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(workspace_json(row))
    else:
        print(f"created workspace {row.name!r} (id {row.id})")
    return EXIT_OK


async def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            rows = await list_workspaces(db)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([workspace_json(row) for row in rows])
    elif not rows:
        print("no workspaces; create one with `sluicegate workspace create NAME`")
    else:
        emit_table(
            ["ID", "NAME", "CREATED"],
            [[row.id, row.name, row.created_at] for row in rows],
        )
    return EXIT_OK


def workspace_json(row: WorkspaceRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at}
