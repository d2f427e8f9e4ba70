"""The OpenAI-compatible proxy routes: chat completions, embeddings, models.

A proxied request is read and validated, authenticated, then run through its
workspace's pipeline.  A whole answer is sent after the after-steps ran; a
stream is relayed chunk by chunk and the after-steps run when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel
from quart import Blueprint, Response, current_app, g, request

from sluicegate.core.auth import authenticate
from sluicegate.core.budgets.stream import STRIP_USAGE_EVENT, WithoutUsageEvent
from sluicegate.core.context import Fate, Outcome, RequestContext
from sluicegate.core.errors import GatewayError, ModelNotFound, ProviderError
from sluicegate.core.http.body import parse_body, read_body
from sluicegate.core.http.client_ip import request_client_ip
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.http.schemas import ChatCompletionRequest, EmbeddingRequest
from sluicegate.core.logs import workspace_var
from sluicegate.core.observability.instruments import FIRST_CHUNK_AT, OVERHEAD_SECONDS
from sluicegate.core.runner import Run
from sluicegate.providers.sse import error_event

proxy = Blueprint("proxy", __name__)


def _gateway() -> Gateway:
    gateway: Gateway = current_app.extensions["sluicegate"]
    return gateway


@proxy.post("/v1/chat/completions")
async def chat_completions() -> Response:
    return await _proxy("chat.completions", ChatCompletionRequest)


@proxy.post("/v1/embeddings")
async def embeddings() -> Response:
    return await _proxy("embeddings", EmbeddingRequest)


@proxy.get("/v1/models")
async def models() -> Response:
    gateway = _gateway()
    principal = await authenticate(_headers(), gateway.services)
    pipeline = gateway.pipelines.get(principal.workspace)
    names = pipeline.visible_models(sorted(gateway.services.config.models))
    created = int(gateway.services.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "sluicegate"}
        for name in names
    ]
    return _json({"object": "list", "data": data})


async def _proxy(endpoint: str, schema: type[BaseModel]) -> Response:
    gateway = _gateway()
    ctx = await _context(gateway, endpoint, schema)
    pipeline = gateway.pipelines.get(ctx.principal.workspace)
    try:
        run = await pipeline.admit(ctx)
    except GatewayError as error:
        error.headers = {**ctx.response_headers, **error.headers}
        raise
    response = ctx.response
    assert response is not None, "the pipeline validator requires a route stage"
    if response.stream is None:
        headers = _proxied_headers(ctx)
        await run.finish_answer(Outcome(Fate.SERVED, response.status))
        return _json(response.body or {}, response.status, headers)
    streamed = Response(
        _relay(run, response.stream),
        status=response.status,
        mimetype="text/event-stream",
        headers=_proxied_headers(ctx),
    )
    streamed.headers["cache-control"] = "no-cache"
    streamed.timeout = None
    return streamed


async def _context(
    gateway: Gateway, endpoint: str, schema: type[BaseModel]
) -> RequestContext:
    services = gateway.services
    raw = await read_body(request, services.settings.max_body_bytes)
    body = parse_body(raw, schema)
    headers = _headers()
    principal = await authenticate(headers, services)
    workspace_var.set(principal.workspace)
    model = body["model"]
    if model not in services.config.models:
        raise ModelNotFound(
            f"model {model!r} has no route; GET /v1/models lists the models "
            "this key may use"
        )
    return RequestContext(
        request_id=g.request_id,
        principal=principal,
        endpoint=endpoint,
        body=body,
        raw_body=raw,
        client_ip=request_client_ip(request, services.settings),
        headers=headers,
        model=model,
        stream=bool(body.get("stream")),
        started=g.started,
    )


async def _relay(run: Run, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    outcome = Outcome(Fate.SERVED, 200)
    try:
        async for chunk in _shaped(run.ctx, stream):
            yield _tapped(run.ctx, chunk)
    except ProviderError as exc:
        outcome = Outcome(Fate.TRUNCATED, 502, "upstream_error")
        event = error_event(f"the provider's stream broke off: {exc}", "upstream_error")
        yield _tapped(run.ctx, event)
    except (asyncio.CancelledError, GeneratorExit):
        outcome = Outcome(Fate.CANCELLED, 499, "cancelled")
        raise
    finally:
        await run.finish_stream(stream, outcome)


RELAY_TAPS = "relay_taps"
"""``ctx.scratch`` key: callables that see each chunk relayed to the client
(the audit stage hashes a stream's bytes with one)."""


def _shaped(ctx: RequestContext, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream as the client gets it: without the usage event it did not
    ask for, when a stage asked the provider for it (``STRIP_USAGE_EVENT``)."""
    if ctx.scratch.get(STRIP_USAGE_EVENT):
        return WithoutUsageEvent(stream)
    return stream


def _tapped(ctx: RequestContext, chunk: bytes) -> bytes:
    ctx.scratch.setdefault(FIRST_CHUNK_AT, time.perf_counter())
    for tap in ctx.scratch.get(RELAY_TAPS, ()):
        tap(chunk)
    return chunk


def _headers() -> dict[str, str]:
    """The request's headers with lower-case names."""
    return {name.lower(): value for name, value in request.headers.items()}


def _proxied_headers(ctx: RequestContext) -> dict[str, str]:
    headers = {**ctx.response_headers}
    overhead_ms = ctx.overhead_ms()
    ctx.scratch[OVERHEAD_SECONDS] = overhead_ms / 1000.0
    headers["x-sluicegate-overhead-ms"] = f"{overhead_ms:.2f}"
    if ctx.response is not None:
        headers["x-sluicegate-target"] = ctx.response.target
        headers.update(ctx.response.headers)
    return headers


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status=status,
        mimetype="application/json",
        headers=headers or {},
    )
