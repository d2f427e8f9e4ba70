"""Running Hypercorn: one process with a graceful drain, or several workers.

:func:`serve_one_process` serves the app in this process with
:func:`~sluicegate.core.http.drain.shutdown_trigger`, so SIGTERM first turns
``/readyz`` unready, then stops accepting and drains (Hypercorn's
``graceful_timeout`` is ``SLUICEGATE_DRAIN_SECONDS``).

:func:`multiprocess_metrics_dir` gives several workers one fresh directory
for Prometheus' multiprocess mode and removes it when they have stopped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from sluicegate.core.http.app import create_app
from sluicegate.core.http.drain import EXTENSION, DrainState, shutdown_trigger
from sluicegate.core.observability.metrics_http import MULTIPROC_ENV
from sluicegate.core.settings import Settings

log = logging.getLogger(__name__)


def serve_one_process(settings: Settings, config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then drain; 0 once everything closed."""
    app = create_app(settings)
    state: DrainState = app.extensions[EXTENSION]
    state.notice_seconds = settings.drain_notice_seconds
    config.workers = 1  # this process serves; Hypercorn spawns none

    async def main() -> None:
        await serve(app, config, shutdown_trigger=lambda: shutdown_trigger(state))

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if importlib.util.find_spec("uvloop") is None:
        return None
    factory: Callable[[], Any] = importlib.import_module("uvloop").new_event_loop
    return factory


@contextmanager
def multiprocess_metrics_dir() -> Iterator[str]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the workers about to start.

    A directory the operator set is used as it is (and kept); otherwise a
    fresh temporary one is made and removed afterwards.
    """
    # TODO(drain-workers): with several workers Hypercorn's parent process takes
    # SIGTERM and stops the workers through an event the app cannot see, so
    # /readyz never says "draining" there (the drain itself still happens).
    # TODO(dead-workers): files of a worker that died are kept until the server
    # stops; its gauges stay in the merged output until then.
    preset = os.environ.get(MULTIPROC_ENV)
    if preset:
        yield preset
        return
    directory = tempfile.mkdtemp(prefix="sluicegate-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    log.info("Prometheus multiprocess mode: worker metrics in %s", directory)
    try:
        yield directory
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(directory, ignore_errors=True)
