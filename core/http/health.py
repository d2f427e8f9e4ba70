"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve)."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Blueprint, Response, current_app

from sluicegate.core.errors import InfrastructureError, StorageError
from sluicegate.core.http.drain import EXTENSION as DRAIN
from sluicegate.core.http.drain import DrainState
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.limits.state import limits_health
from sluicegate.core.reliability.breaker import breakers_health

PING_TIMEOUT_SECONDS = 2.0
"""/readyz calls the database down if it does not answer a ping in this time."""

health = Blueprint("health", __name__)


@health.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@health.get("/readyz")
async def readyz() -> Response:
    drain: DrainState | None = current_app.extensions.get(DRAIN)
    if drain is not None and drain.draining:
        return Response(b'{"status":"draining"}', 503, mimetype="application/json")
    gateway: Gateway = current_app.extensions["sluicegate"]
    checks = {
        "database": await _database(gateway),
        "redis": await _redis(gateway),
        "breakers": breakers_health(gateway.services.breakers),
        "rate_limit": limits_health(gateway.services),
    }
    unready = checks["database"]["status"] != "ok"
    degraded = any(check["status"] not in ("ok", "off") for check in checks.values())
    status = "unready" if unready else "degraded" if degraded else "ready"
    body = {"status": status, "checks": checks}
    return Response(
        orjson.dumps(body),
        status=503 if unready else 200,
        mimetype="application/json",
    )


async def _database(gateway: Gateway) -> dict[str, Any]:
    database = gateway.services.database
    try:
        await database.within(PING_TIMEOUT_SECONDS, database.ping())
    except (StorageError, TimeoutError) as exc:
        return {"status": "down", "error": str(exc)}
    return {"status": "ok", "engine": gateway.services.database.engine_type}


async def _redis(gateway: Gateway) -> dict[str, Any]:
    guard = gateway.services.redis
    if guard is None:
        return {"status": "off", "detail": "SLUICEGATE_REDIS_URL unset: in-process"}
    try:
        await guard.call(lambda client: client.ping())
    except InfrastructureError as exc:
        return {"status": "down", "error": str(exc)}
    return {"status": "ok"}
