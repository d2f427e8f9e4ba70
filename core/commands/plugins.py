"""``sluicegate plugins``: what is loaded and what each plugin adds."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from sluicegate.core.plugins import build_manager
from sluicegate.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins", help="list loaded plugins and what each adds"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_list)


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    _, registry = build_manager(settings)
    adds: dict[str, list[str]] = defaultdict(list)
    for key, owner in sorted(registry.owners.items()):
        adds[owner].append(key)
    rows: list[dict[str, Any]] = [
        {
            "name": plugin.name,
            "version": plugin.version,
            "builtin": plugin.builtin,
            "adds": adds.get(plugin.name, []),
        }
        for plugin in registry.plugins
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        origin = "built-in" if row["builtin"] else "entry point"
        print(f"{row['name']} {row['version']} ({origin})")
        for item in row["adds"]:
            print(f"  {item}")
    return 0
