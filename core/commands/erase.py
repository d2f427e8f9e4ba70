"""``sluicegate erase --workspace W --subject S``: GDPR erasure of one end user.

Deletes the subject's stored request and response bodies and the evaluation
jobs still queued with their text, and appends an ``erasure`` audit record
saying so; the chain still verifies (:mod:`sluicegate.core.audit.erasure`).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sluicegate.core.audit.erasure import erase_subject
from sluicegate.core.commands.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    database,
    emit_json,
    report,
)
from sluicegate.core.errors import InvalidRequest, StorageError
from sluicegate.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="erase one end user's stored content (GDPR)",
        description="Deletes the audit payloads and queued evaluation inputs "
        "of one subject (the end-user id clients send, e.g. OpenAI's `user`) "
        "and records the erasure in the workspace's audit chain.",
    )
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--subject", required=True, help="the end-user id")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle_erase)


async def handle_erase(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            result = await erase_subject(
                db, args.workspace, args.subject, datetime.now(UTC)
            )
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(
            {
                "workspace": result.workspace,
                "subject_sha256": result.subject_sha256,
                "payloads_deleted": result.payloads_deleted,
                "deferred_evaluations_deleted": result.deferred_evaluations_deleted,
                "audit_records": result.audit_records,
            }
        )
    else:
        print(
            f"workspace {result.workspace!r}: erased {result.payloads_deleted} "
            f"payloads and {result.deferred_evaluations_deleted} queued "
            f"evaluations; recorded as {', '.join(result.audit_records)}"
        )
    return EXIT_OK
