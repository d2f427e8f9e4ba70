"""``sluicegate spend``: what workspaces and API keys spent, from the ledger."""

from __future__ import annotations

import argparse

from sluicegate.core.budgets.report import spend
from sluicegate.core.commands.output import (
    EXIT_FAILED,
    EXIT_OK,
    database,
    emit_json,
    emit_table,
    report,
)
from sluicegate.core.errors import StorageError
from sluicegate.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "spend",
        help="show spend per workspace, key, model or day",
        description="Sum the usage ledger (the truth behind budgets) over the "
        "current UTC day or month, or all of it.",
    )
    parser.add_argument("--workspace", help="only this workspace")
    parser.add_argument("--key", help="only this API key (its prefix)")
    parser.add_argument(
        "--by", choices=("model", "key", "day"), default="model", help="group rows"
    )
    parser.add_argument(
        "--window",
        choices=("day", "month", "all"),
        default="month",
        help="the current UTC day, the current UTC month (default) or all time",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle_spend)


async def handle_spend(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            rows = await spend(
                db,
                workspace=args.workspace,
                key_prefix=args.key,
                by=args.by,
                span=args.window,
            )
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([row.as_json() for row in rows])
    elif not rows:
        print(f"no spend in the ledger for this {args.window}")
    else:
        emit_table(
            ["WORKSPACE", args.by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "USD"],
            [
                [
                    row.workspace,
                    row.group,
                    row.requests,
                    row.prompt_tokens,
                    row.completion_tokens,
                    f"{row.cost_usd:.6f}",
                ]
                for row in rows
            ],
        )
    return EXIT_OK
