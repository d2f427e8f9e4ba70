"""The Anthropic-shaped ingress: ``POST /v1/messages``.

The official ``anthropic`` SDK works against the gateway as it would against
Anthropic: the same API keys (``x-api-key`` or a bearer token), the same
workspace pipeline (with ``endpoint="messages"``), answers and stream events
in Anthropic's shape, and errors as ``{"type": "error", "error": {"type",
"message"}}``.  The route stage sends the request natively to an Anthropic
target, or translated to an OpenAI-compatible one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from quart import Blueprint, Response, current_app, g, request

from sluicegate.core.auth import authenticate
from sluicegate.core.context import Fate, Outcome, RequestContext
from sluicegate.core.errors import GatewayError, ModelNotFound, ProviderError
from sluicegate.core.http.body import parse_body, read_body
from sluicegate.core.http.client_ip import request_client_ip
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.http.schemas import MessagesRequest
from sluicegate.core.runner import Run
from sluicegate.providers.anthropic_translate import anthropic_event_bytes

messages = Blueprint("messages", __name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    431: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


@messages.post("/v1/messages")
async def create_message() -> Response:
    gateway: Gateway = current_app.extensions["sluicegate"]
    ctx = await _context(gateway)
    pipeline = gateway.pipelines.get(ctx.principal.workspace)
    try:
        run = await pipeline.admit(ctx)
    except GatewayError as error:
        error.headers = {**ctx.response_headers, **error.headers}
        raise
    response = ctx.response
    assert response is not None, "the pipeline validator requires a route stage"
    if response.stream is None:
        headers = _headers(ctx)
        await run.finish_answer(Outcome(Fate.SERVED, response.status))
        return Response(
            orjson.dumps(response.body or {}),
            status=response.status,
            mimetype="application/json",
            headers=headers,
        )
    streamed = Response(
        _relay(run, response.stream),
        mimetype="text/event-stream",
        headers=_headers(ctx),
    )
    streamed.headers["cache-control"] = "no-cache"
    streamed.timeout = None
    return streamed


@messages.errorhandler(GatewayError)
async def anthropic_error(error: GatewayError) -> Response:
    response = Response(
        error_body(error), status=error.status, mimetype="application/json"
    )
    response.headers.update(error.headers)
    response.headers["x-request-id"] = g.get("request_id", "")
    return response


def error_body(error: GatewayError) -> bytes:
    """An error in Anthropic's shape; the gateway's code leads the message."""
    kind = ERROR_TYPES.get(error.status, "api_error")
    message = f"{error.code}: {error.message}"
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


async def _context(gateway: Gateway) -> RequestContext:
    services = gateway.services
    raw = await read_body(request, services.settings.max_body_bytes)
    body = parse_body(raw, MessagesRequest)
    headers = {name.lower(): value for name, value in request.headers.items()}
    principal = await authenticate(headers, services)
    model = body["model"]
    if model not in services.config.models:
        raise ModelNotFound(
            f"model {model!r} has no route; GET /v1/models lists the models "
            "this key may use"
        )
    return RequestContext(
        request_id=g.request_id,
        principal=principal,
        endpoint="messages",
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
        async for chunk in stream:
            yield chunk
    except ProviderError as exc:
        outcome = Outcome(Fate.TRUNCATED, 502, "upstream_error")
        error = {"type": "api_error", "message": f"the stream broke off: {exc}"}
        yield anthropic_event_bytes("error", {"error": error})
    except (asyncio.CancelledError, GeneratorExit):
        outcome = Outcome(Fate.CANCELLED, 499, "cancelled")
        raise
    finally:
        await run.finish_stream(stream, outcome)


def _headers(ctx: RequestContext) -> dict[str, str]:
    headers = {**ctx.response_headers}
    headers["x-sluicegate-overhead-ms"] = f"{ctx.overhead_ms():.2f}"
    if ctx.response is not None:
        headers["x-sluicegate-target"] = ctx.response.target
        headers.update(ctx.response.headers)
    return headers
