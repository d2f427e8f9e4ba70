"""``sluicegate key create|list|revoke``: API keys of workspaces."""

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
from sluicegate.core.keys import (
    KeyRow,
    create_key,
    list_keys,
    parse_key_ref,
    revoke_key,
    validate_key_name,
)
from sluicegate.core.settings import Settings

SHOWN_ONCE = (
    "This key is shown only once: store it now. sluicegate keeps only its hash "
    "and cannot show it again."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "key",
        help="create, list and revoke API keys",
        description="API keys authenticate clients; each belongs to one workspace.",
    )
    actions = parser.add_subparsers(dest="key_action", required=True)

    create = actions.add_parser(
        "create", help="create a key and print it (only this once)"
    )
    create.add_argument("--workspace", required=True, help="the workspace's name")
    create.add_argument("--name", help="a label for the key (up to 255 characters)")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=handle_create)

    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--workspace", help="only this workspace's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=handle_list)

    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument(
        "key", metavar="PREFIX_OR_ID", help="the key's id or prefix (abcd1234)"
    )
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(handler=handle_revoke)


async def handle_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        validate_key_name(args.name)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    try:
        async with database(settings) as db:
            row, secret = await create_key(db, args.workspace, args.name)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json({**key_json(row), "key": secret, "note": SHOWN_ONCE})
    else:
        print(
            f"created API key {row.prefix} (id {row.id}) "
            f"in workspace {row.workspace!r}:"
        )
        print()
        print(f"    {secret}")
        print()
        print(SHOWN_ONCE)
    return EXIT_OK


async def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            rows = await list_keys(db, args.workspace)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([key_json(row) for row in rows])
    elif not rows:
        print("no API keys; create one with `sluicegate key create --workspace NAME`")
    else:
        emit_table(
            ["ID", "PREFIX", "WORKSPACE", "NAME", "CREATED", "REVOKED"],
            [
                [r.id, r.prefix, r.workspace, r.name, r.created_at, r.revoked_at]
                for r in rows
            ],
        )
    return EXIT_OK


async def handle_revoke(args: argparse.Namespace, settings: Settings) -> int:
    try:
        parse_key_ref(args.key)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    try:
        async with database(settings) as db:
            row = await revoke_key(db, args.key)
    except (InvalidRequest, StorageError) as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(key_json(row))
    else:
        assert row.revoked_at is not None
        since = row.revoked_at.isoformat(sep=" ", timespec="seconds")
        print(
            f"API key {row.prefix} (id {row.id}) of workspace {row.workspace!r} "
            f"is revoked (since {since})"
        )
    return EXIT_OK


def key_json(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "workspace": row.workspace,
        "prefix": row.prefix,
        "name": row.name,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }
