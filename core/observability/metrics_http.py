"""``GET /metrics``: the Prometheus text exposition of the gateway.

With one process the app-owned registry is rendered.  With several Hypercorn
workers, ``sluicegate serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before the workers start; each worker's instruments then write to
files there, and whichever worker answers the scrape merges every worker's
files, so the numbers are the whole server's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from quart import Blueprint, Response, current_app

from sluicegate.core.errors import InfrastructureError
from sluicegate.core.evals.queue import waiting_jobs
from sluicegate.core.http.drain import EXTENSION as DRAIN
from sluicegate.core.services import Services

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

metrics = Blueprint("metrics", __name__)


# TODO(metrics-auth): /metrics has no token of its own; labels name workspaces
# and models, so keep it reachable from the monitoring network only (README).
@metrics.get("/metrics")
async def scrape() -> Response:
    services: Services = current_app.extensions["sluicegate"].services
    gauges = services.metrics.observability
    gauges.audit_spool_bytes.set(spool_bytes(services.settings.spool_dir))
    await _queue_depth(services)
    drain = current_app.extensions.get(DRAIN)
    gauges.draining.set(1 if drain is not None and drain.draining else 0)
    body = generate_latest(_registry(services))
    return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)


async def _queue_depth(services: Services) -> None:
    """Evaluation jobs waiting in Redis (entries of the stream); the in-process
    queue has no backlog to report."""
    if services.redis is None:
        return
    settings = services.settings
    try:
        depth = await services.redis.call(lambda c: waiting_jobs(c, settings))
    except InfrastructureError:
        return  # Redis is down: /readyz says so; keep the last reading
    services.metrics.observability.queue_depth.labels(queue="evals").set(depth)


def _registry(services: Services) -> CollectorRegistry:
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return services.metrics.registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return merged


def spool_bytes(directory: Path) -> int:
    """Bytes of the files in the audit spool directory (0 if there is none)."""
    if not directory.is_dir():
        return 0
    total = 0
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
            total += path.stat().st_size if path.is_file() else 0
    return total
