"""``sluicegate pipeline check FILE``: validate a pipeline file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sluicegate.core.errors import ConfigError
from sluicegate.core.pipeline import read_pipeline
from sluicegate.core.plugins import build_manager
from sluicegate.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("pipeline", help="work with pipeline files")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a pipeline file")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check)


async def _check(args: argparse.Namespace, settings: Settings) -> int:
    _, registry = build_manager(settings)
    try:
        spec = read_pipeline(args.file, registry.stage_types)
    except ConfigError as exc:
        if args.json:
            problems = [vars(problem) for problem in exc.problems]
            print(json.dumps({"valid": False, "problems": problems}, indent=2))
        else:
            print(f"{args.file}: invalid", *map(str, exc.problems), sep="\n  ")
        return 1
    stages = [config.id or config.type for _, config in spec.stages]
    if args.json:
        print(json.dumps({"valid": True, "stages": stages}))
    else:
        print(f"{args.file}: valid; stages: {', '.join(stages)}")
    return 0
