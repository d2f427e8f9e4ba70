"""``sluicegate audit verify|export``: check the audit chains, export records."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sluicegate.core.audit.export import Range, export_lines
from sluicegate.core.audit.verify import ChainReport, verify
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
        "audit",
        help="verify the audit chains, export audit records",
        description="Every request leaves one hash-chained audit record per "
        "workspace; these commands check and export them.",
    )
    actions = parser.add_subparsers(dest="audit_action", required=True)

    check = actions.add_parser(
        "verify", help="check every chain; exit 1 naming the first bad record"
    )
    check.add_argument("--workspace", help="only this workspace's chain")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=handle_verify)

    export = actions.add_parser("export", help="write records as JSON Lines")
    export.add_argument("--workspace", help="only this workspace's records")
    export.add_argument("--from-seq", type=int, help="first sequence number")
    export.add_argument("--to-seq", type=int, help="last sequence number")
    export.add_argument("--since", type=_moment, help="ISO 8601 time, inclusive")
    export.add_argument("--until", type=_moment, help="ISO 8601 time, inclusive")
    export.add_argument("--output", type=Path, help="a file (default: stdout)")
    export.set_defaults(handler=handle_export)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2026-12-03T18:00:00Z"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def handle_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            reports = await verify(db, args.workspace)
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([_report_json(r) for r in reports])
    else:
        _print_reports(reports)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _report_json(chain: ChainReport) -> dict[str, Any]:
    fault = asdict(chain.fault) if chain.fault else None
    return {**asdict(chain), "ok": chain.ok, "fault": fault}


def _print_reports(reports: list[ChainReport]) -> None:
    emit_table(
        ["WORKSPACE", "RECORDS", "PAYLOADS", "HEAD", "STATUS"],
        [
            [r.workspace, r.records, r.payloads, r.head_seq, "ok" if r.ok else "BROKEN"]
            for r in reports
        ],
    )
    for chain in reports:
        if chain.fault is not None:
            fault = chain.fault
            print(
                f"workspace {chain.workspace!r}: first bad record is seq {fault.seq} "
                f"(request {fault.request_id}, row id {fault.record_id}): "
                f"{fault.problem}"
            )


async def handle_export(args: argparse.Namespace, settings: Settings) -> int:
    wanted = Range(args.workspace, args.from_seq, args.to_seq, args.since, args.until)
    out: TextIO = sys.stdout
    try:
        if args.output is not None:
            out = args.output.open("w", encoding="utf-8")
        async with database(settings) as db:
            async for line in export_lines(db, wanted):
                out.write(line + "\n")
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except (StorageError, OSError) as exc:
        return report(exc, EXIT_FAILED)
    finally:
        if out is not sys.stdout:
            out.close()
    return EXIT_OK
