"""The Anthropic-shaped ingress: ``POST /v1/messages``.

The official ``anthropic`` SDK works against the gateway as it would against
Anthropic: the same API keys (``x-api-key`` or a bearer token), the same
workspace pipeline (with ``endpoint="messages"``), answers and stream events
in Anthropic's shape, and errors as ``{"type": "error", "error": {"type",
"message"}}``.  The route stage sends the request natively to an Anthropic
target, or translated to an OpenAI-compatible one.
"""

from __future__ import annotations

import orjson
from quart import Blueprint, Response, current_app, g

from sluicegate.core.context import Fate, Outcome
from sluicegate.core.errors import GatewayError, ProviderError
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.http.passage import (
    admitted,
    relay,
    request_context,
    response_headers,
)
from sluicegate.core.http.schemas import MessagesRequest
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
    ctx = await request_context(gateway, "messages", MessagesRequest)
    run = await admitted(gateway, ctx)
    response = ctx.response
    assert response is not None, "the pipeline validator requires a route stage"
    headers = response_headers(ctx)
    if response.stream is None:
        await run.finish_answer(Outcome(Fate.SERVED, response.status))
        return Response(
            orjson.dumps(response.body or {}),
            status=response.status,
            mimetype="application/json",
            headers=headers,
        )
    streamed = Response(
        relay(run, response.stream, _broken),
        mimetype="text/event-stream",
        headers=headers,
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


def _broken(error: ProviderError) -> bytes:
    event = {"type": "api_error", "message": f"the stream broke off: {error}"}
    return anthropic_event_bytes("error", {"error": event})
