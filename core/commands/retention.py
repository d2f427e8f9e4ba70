"""``sluicegate retention run|set|clear|show``: audit retention policies.

``run`` applies every workspace's policy once, now (``sluicegate scheduler``
runs the same job every hour).  ``set`` stores a workspace's policy in the
database, where it overrides the ``retention:`` of the workspace pipeline's
audit stage; ``clear`` removes it again; ``show`` prints what applies.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sluicegate.core.audit.policy import (
    Policy,
    clear_policy,
    policies,
    set_policy,
    validate_days,
)
from sluicegate.core.audit.retention import RetentionResult, run_retention
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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "retention",
        help="apply and set audit retention policies",
        description="Per workspace, audit payloads and records older than "
        "their policy's days are deleted; dropped records leave a checkpoint "
        "from which `sluicegate audit verify` continues.",
    )
    actions = parser.add_subparsers(dest="retention_action", required=True)

    run = actions.add_parser("run", help="apply the policies once, now")
    run.add_argument("--workspace", help="only this workspace")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(handler=handle_run)

    store = actions.add_parser(
        "set", help="store a workspace's policy (overrides its pipeline's)"
    )
    store.add_argument("--workspace", required=True)
    store.add_argument(
        "--payload-days", type=int, help="keep bodies this long (omit: for ever)"
    )
    store.add_argument(
        "--record-days", type=int, help="keep records this long (omit: for ever)"
    )
    store.add_argument("--json", action="store_true", help="print JSON")
    store.set_defaults(handler=handle_set)

    clear = actions.add_parser(
        "clear", help="remove a stored policy (the pipeline's applies again)"
    )
    clear.add_argument("--workspace", required=True)
    clear.set_defaults(handler=handle_clear)

    show = actions.add_parser("show", help="print the policy each workspace has")
    show.add_argument("--workspace", help="only this workspace")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=handle_show)


async def handle_run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            found = await policies(db, settings.pipelines_dir, args.workspace)
            results = await run_retention(db, found, datetime.now(UTC))
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([_result_json(result) for result in results])
    elif not results:
        print("no workspace has a retention policy; nothing was deleted")
    else:
        emit_table(
            ["WORKSPACE", "PAYLOADS DELETED", "RECORDS DROPPED", "CHECKPOINT"],
            [
                [r.workspace, r.payloads_deleted, r.records_dropped, r.checkpoint_seq]
                for r in results
            ],
        )
    return EXIT_OK


def _result_json(result: RetentionResult) -> dict[str, Any]:
    return {
        "workspace": result.workspace,
        "payloads_deleted": result.payloads_deleted,
        "records_dropped": result.records_dropped,
        "checkpoint_seq": result.checkpoint_seq,
        "audit_records": result.audit_records,
    }


async def handle_set(args: argparse.Namespace, settings: Settings) -> int:
    try:
        validate_days(args.payload_days, "--payload-days")
        validate_days(args.record_days, "--record-days")
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    try:
        async with database(settings) as db:
            policy = await set_policy(
                db,
                args.workspace,
                args.payload_days,
                args.record_days,
                datetime.now(UTC),
            )
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(_policy_json(policy))
    else:
        print(f"workspace {policy.workspace!r}: {_describe(policy)}")
    return EXIT_OK


async def handle_clear(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            had = await clear_policy(db, args.workspace)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    what = "removed its stored policy" if had else "had no stored policy"
    print(f"workspace {args.workspace!r} {what}; its pipeline's retention applies")
    return EXIT_OK


async def handle_show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            found = await policies(db, settings.pipelines_dir, args.workspace)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([_policy_json(policy) for policy in found])
    else:
        emit_table(
            ["WORKSPACE", "PAYLOAD DAYS", "RECORD DAYS", "FROM"],
            [[p.workspace, p.payload_days, p.record_days, p.source] for p in found],
        )
    return EXIT_OK


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "workspace": policy.workspace,
        "payload_days": policy.payload_days,
        "record_days": policy.record_days,
        "source": policy.source,
    }


def _describe(policy: Policy) -> str:
    return (
        f"payloads kept {_days(policy.payload_days)}, "
        f"records kept {_days(policy.record_days)}"
    )


def _days(value: int | None) -> str:
    return "for ever" if value is None else f"{value} days"
