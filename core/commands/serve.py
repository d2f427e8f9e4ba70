"""``sluicegate serve``: check the configuration, then serve with Hypercorn.

Everything that can be wrong with the configuration is found before the first
worker starts.  On the embedded SQLite default, the database is migrated and,
when it has no workspace yet, a ``default`` workspace and a first API key are
created and printed with a ready-to-run request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging

from hypercorn.config import Config
from hypercorn.run import run

from sluicegate.core.db.database import Database
from sluicegate.core.gateway_config import load_config
from sluicegate.core.http.serving import (
    multiprocess_metrics_dir,
    serve_one_process,
)
from sluicegate.core.keys import create_key
from sluicegate.core.pipeline import read_pipeline
from sluicegate.core.plugins import build_manager
from sluicegate.core.settings import Settings
from sluicegate.core.workspaces import create_workspace, list_workspaces

APP_FACTORY = "sluicegate.core.http.asgi:create_app()"
MAX_HEADER_BYTES = 32 * 1024
"""The app answers 431 past this; the server drops what is far larger."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes; more than one needs PostgreSQL (and Redis for exact limits)",
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Synchronous: Hypercorn runs its own event loop in the main thread."""
    check_configuration(settings)
    asyncio.run(_prepare_database(settings, args))
    config = hypercorn_config(
        args.host, args.port, args.workers, drain_seconds=settings.drain_seconds
    )
    if args.workers > 1:
        with multiprocess_metrics_dir():
            return run(config)
    return serve_one_process(settings, config)


def check_configuration(settings: Settings) -> None:
    """Raise ConfigError for a bad gateway config or any bad pipeline file."""
    _, registry = build_manager(settings)
    load_config(settings.config_path, registry.provider_kinds)
    if settings.pipelines_dir.is_dir():
        for path in sorted(settings.pipelines_dir.glob("*.yaml")):
            read_pipeline(path, registry.stage_types)


async def _prepare_database(settings: Settings, args: argparse.Namespace) -> None:
    database = await Database.connect(settings.database_url)
    try:
        if settings.uses_sqlite:
            await database.migrate()
            if not await list_workspaces(database):
                await _bootstrap(database, args)
    finally:
        await database.close()


async def _bootstrap(database: Database, args: argparse.Namespace) -> None:
    await create_workspace(database, "default")
    _, secret = await create_key(database, "default", name="first key")
    base = f"http://{args.host}:{args.port}/v1"
    print(
        "sluicegate: created workspace 'default' and its first API key "
        "(shown once, keep it):\n"
        f"  {secret}\n"
        "Try it (the offline model needs no provider key):\n"
        f"  curl {base}/chat/completions -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model": "sluicegate-offline", "messages": '
        '[{"role": "user", "content": "Hello"}]}\'\n'
        f"or with the openai SDK: OpenAI(base_url='{base}', api_key='{secret}')",
        flush=True,
    )


def hypercorn_config(
    host: str, port: int, workers: int, *, drain_seconds: float = 30.0
) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.h11_max_incomplete_size = MAX_HEADER_BYTES * 2
    config.application_path = APP_FACTORY
    config.workers = 0 if workers <= 1 else workers
    config.worker_class = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config.graceful_timeout = drain_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # scrubbed, JSON
    config.keep_alive_timeout = 75
    return config
