"""``sluicegate evals list|rerun|compare``: evaluation runs and their results."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
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
from sluicegate.core.errors import ConfigError, InvalidRequest, StorageError
from sluicegate.core.evals.compare import Comparison, compare
from sluicegate.core.evals.rerun import RerunReport, Selection, rerun
from sluicegate.core.evals.runs import RunRow, get_run, list_runs, run_results
from sluicegate.core.services import open_services
from sluicegate.core.settings import Settings

RUN_HEADERS = (
    *("RUN", "EVALUATOR", "VERSION", "CONFIG", "KIND"),
    *("WORKSPACE", "RESULTS", "ERRORS", "CREATED"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evals",
        help="list, re-run and compare evaluation runs",
        description="Evaluation runs hold evaluators' verdicts on requests; "
        "results are never changed, a re-run is a new run.",
    )
    actions = parser.add_subparsers(dest="evals_action", required=True)

    listing = actions.add_parser("list", help="list evaluation runs, newest first")
    listing.add_argument("--evaluator", help="only this evaluator's runs")
    listing.add_argument("--workspace", help="only this workspace's runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=handle_list)

    again = actions.add_parser(
        "rerun", help="re-evaluate stored requests as a new run (nothing upstream)"
    )
    again.add_argument("--evaluator", required=True, help="the evaluator's name")
    again.add_argument("--workspace", help="only this workspace's requests")
    again.add_argument("--since", type=_moment, help="ISO 8601 time, inclusive")
    again.add_argument("--until", type=_moment, help="ISO 8601 time, inclusive")
    again.add_argument(
        "--config",
        type=_config,
        help="the evaluator's settings as a JSON object (default: the "
        "workspace's pipeline file, else the evaluator's defaults)",
    )
    again.add_argument("--json", action="store_true", help="print JSON")
    again.set_defaults(handler=handle_rerun)

    diff = actions.add_parser("compare", help="per-request changes from run A to B")
    diff.add_argument("run_a", type=int, metavar="RUN_A")
    diff.add_argument("run_b", type=int, metavar="RUN_B")
    diff.add_argument("--all", action="store_true", help="list unchanged requests too")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(handler=handle_compare)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2026-12-03T18:00:00Z"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--config is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--config must be a JSON object")
    return value


async def handle_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            runs = await list_runs(db, args.evaluator, args.workspace)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json([run_json(run) for run in runs])
    elif not runs:
        print("no evaluation runs yet")
    else:
        emit_table(
            RUN_HEADERS,
            [
                [
                    *(r.id, r.evaluator, r.version, r.config_hash[:12], r.kind),
                    *(r.workspace, r.results, r.errors, r.created_at),
                ]
                for r in runs
            ],
        )
    return EXIT_OK


def run_json(run: RunRow) -> dict[str, Any]:
    return asdict(run)


async def handle_rerun(args: argparse.Namespace, settings: Settings) -> int:
    selection = Selection(args.workspace, args.since, args.until)
    services = await open_services(settings)
    try:
        result = await rerun(services, args.evaluator, selection, args.config)
    except (InvalidRequest, ConfigError) as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    finally:
        await services.close()
    if args.json:
        emit_json(asdict(result))
    else:
        _print_rerun(result)
    return EXIT_OK


def _print_rerun(result: RerunReport) -> None:
    print(
        f"run {result.run_id}: {result.evaluator} {result.version}, config "
        f"{result.config_hash[:12]} (from {result.config_source}); "
        f"{result.requests} requests re-evaluated, {result.errors} errors"
    )


async def handle_compare(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with database(settings) as db:
            run_a, run_b = await get_run(db, args.run_a), await get_run(db, args.run_b)
            comparison = compare(
                await run_results(db, run_a.id), await run_results(db, run_b.id)
            )
    except InvalidRequest as exc:
        return report(exc, EXIT_USAGE)
    except StorageError as exc:
        return report(exc, EXIT_FAILED)
    if args.json:
        emit_json(comparison_json(run_a, run_b, comparison))
    else:
        _print_comparison(run_a, run_b, comparison, show_all=args.all)
    return EXIT_OK


def comparison_json(a: RunRow, b: RunRow, comparison: Comparison) -> dict[str, Any]:
    return {
        "run_a": run_json(a),
        "run_b": run_json(b),
        "summary": comparison.summary(),
        "changes": [
            {**asdict(change), "delta": change.delta, "changed": change.changed}
            for change in comparison.changes
        ],
        "only_in_a": comparison.only_a,
        "only_in_b": comparison.only_b,
    }


def _print_comparison(
    a: RunRow, b: RunRow, comparison: Comparison, *, show_all: bool
) -> None:
    for letter, run in (("A", a), ("B", b)):
        print(
            f"run {letter}: {run.id} {run.evaluator} {run.version} config "
            f"{run.config_hash[:12]} ({run.kind}, {run.created_at:%Y-%m-%d %H:%M})"
        )
    rows = [c for c in comparison.changes if show_all or c.changed]
    if rows:
        emit_table(
            ["REQUEST", "A", "B", "DELTA", "LABELS ADDED", "LABELS REMOVED"],
            [
                [
                    *(c.request_id, _score(c.score_a, c.error_a)),
                    *(_score(c.score_b, c.error_b), _delta(c.delta)),
                    *(",".join(c.labels_added), ",".join(c.labels_removed)),
                ]
                for c in rows
            ],
        )
    summary = comparison.summary()
    print(
        "summary: "
        + ", ".join(
            f"{key} {_value(value)}"
            for key, value in summary.items()
            if not isinstance(value, dict)
        )
    )
    for key in ("labels_added", "labels_removed"):
        if summary[key]:
            flips = ", ".join(f"{label} x{n}" for label, n in summary[key].items())
            print(f"{key.replace('_', ' ')}: {flips}")


def _score(score: float | None, error: str | None) -> str:
    return "error" if error else f"{score:.3f}" if score is not None else "-"


def _delta(delta: float | None) -> str:
    return "-" if delta is None else f"{delta:+.3f}"


def _value(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
