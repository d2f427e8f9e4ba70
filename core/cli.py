"""The ``sluicegate`` command line.

Each command lives in ``core/commands/<name>.py`` with a ``register`` function
that adds its parser and sets an async ``handler(args, settings) -> int``.
Exit status: 0 success, 1 a finding or failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence
from typing import Any

from sluicegate.core import __version__
from sluicegate.core.errors import ConfigError, PluginError, SluicegateError
from sluicegate.core.logs import configure_logging
from sluicegate.core.settings import Settings, load_settings

COMMANDS = (
    "serve",
    "migrate",
    "workspace",
    "key",
    "pipeline",
    "plugins",
    "audit",
    "spend",
    "admin_token",
    "worker",
    "scheduler",
    "evals",
    "retention",
    "erase",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluicegate",
        description="An LLM gateway: pipelines of stages between your "
        "applications and LLM providers.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"sluicegate.core.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(f"invalid settings:\n{exc}", 2)
    configure_logging(settings)
    try:
        status: int = _call(args.handler, args, settings)
    except (ConfigError, PluginError) as exc:
        return _fail(str(exc), 2)
    except SluicegateError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return status


def _call(handler: Any, args: argparse.Namespace, settings: Settings) -> int:
    """Run a handler: async ones in a fresh event loop, sync ones directly."""
    if inspect.iscoroutinefunction(handler):
        return int(asyncio.run(handler(args, settings)))
    return int(handler(args, settings))


def _fail(message: str, status: int) -> int:
    print(f"sluicegate: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
