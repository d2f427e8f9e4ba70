"""What every proxied route does with a request, whatever its shape.

The OpenAI routes (:mod:`.proxy`) and the Anthropic one (:mod:`.messages`)
differ in their schemas, their error shapes and the event that ends a broken
stream; everything else is here, once: reading and authenticating the request
into a :class:`RequestContext`, running its workspace's pipeline, the
gateway's response headers, and relaying a stream with the taps that see each
chunk (the audit stage hashes a stream's bytes with one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel
from quart import g, request

from sluicegate.core.auth import authenticate
from sluicegate.core.context import Fate, Outcome, RequestContext
from sluicegate.core.errors import GatewayError, ModelNotFound, ProviderError
from sluicegate.core.http.body import parse_body, read_body
from sluicegate.core.http.client_ip import request_client_ip
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.logs import workspace_var
from sluicegate.core.observability.instruments import FIRST_CHUNK_AT, OVERHEAD_SECONDS
from sluicegate.core.runner import Run

RELAY_TAPS = "relay_taps"
"""``ctx.scratch`` key: callables that see each chunk relayed to the client
(the audit stage hashes a stream's bytes with one)."""


def request_headers() -> dict[str, str]:
    """The request's headers with lower-case names."""
    return {name.lower(): value for name, value in request.headers.items()}


async def request_context(
    gateway: Gateway, endpoint: str, schema: type[BaseModel]
) -> RequestContext:
    """The request read, validated and authenticated; 400/401/404/413 if not."""
    services = gateway.services
    raw = await read_body(request, services.settings.max_body_bytes)
    body = parse_body(raw, schema)
    headers = request_headers()
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


async def admitted(gateway: Gateway, ctx: RequestContext) -> Run:
    """Run the before steps of the workspace's pipeline.

    A refusal keeps the headers stages added (``x-ratelimit-*``, say).
    """
    pipeline = gateway.pipelines.get(ctx.principal.workspace)
    try:
        return await pipeline.admit(ctx)
    except GatewayError as error:
        error.headers = {**ctx.response_headers, **error.headers}
        raise


def response_headers(ctx: RequestContext) -> dict[str, str]:
    """Stages' headers, the gateway's overhead so far and the target's."""
    headers = {**ctx.response_headers}
    overhead_ms = ctx.overhead_ms()
    ctx.scratch[OVERHEAD_SECONDS] = overhead_ms / 1000.0
    headers["x-sluicegate-overhead-ms"] = f"{overhead_ms:.2f}"
    if ctx.response is not None:
        headers["x-sluicegate-target"] = ctx.response.target
        headers.update(ctx.response.headers)
    return headers


async def relay(
    run: Run,
    stream: AsyncIterator[bytes],
    broken: Callable[[ProviderError], bytes],
    source: AsyncIterator[bytes] | None = None,
) -> AsyncIterator[bytes]:
    """Relay ``stream`` to the client; finish the run however it ends.

    A provider failure mid-stream ends it with ``broken(error)`` (an error
    event, never a clean end).  ``source`` is the provider's own stream when
    ``stream`` wraps it; it is the one closed at the end.
    """
    outcome = Outcome(Fate.SERVED, 200)
    try:
        async for chunk in stream:
            yield _tapped(run.ctx, chunk)
    except ProviderError as exc:
        outcome = Outcome(Fate.TRUNCATED, 502, "upstream_error")
        yield _tapped(run.ctx, broken(exc))
    except (asyncio.CancelledError, GeneratorExit):
        outcome = Outcome(Fate.CANCELLED, 499, "cancelled")
        raise
    finally:
        await run.finish_stream(source or stream, outcome)


def _tapped(ctx: RequestContext, chunk: bytes) -> bytes:
    ctx.scratch.setdefault(FIRST_CHUNK_AT, time.perf_counter())
    for tap in ctx.scratch.get(RELAY_TAPS, ()):
        tap(chunk)
    return chunk
