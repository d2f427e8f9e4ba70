"""The OpenAI-compatible proxy routes: chat completions, embeddings, models.

A proxied request is read and validated, authenticated, then run through its
workspace's pipeline (:mod:`.passage`, shared with ``/v1/messages``).  A whole
answer is sent, then the after-steps run (before it, if a stage holds
answers); a stream is relayed chunk by chunk and the after-steps run when it
ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel
from quart import Blueprint, Response, current_app

from sluicegate.core.auth import authenticate
from sluicegate.core.budgets.stream import STRIP_USAGE_EVENT, WithoutUsageEvent
from sluicegate.core.context import Fate, Outcome, RequestContext
from sluicegate.core.errors import ProviderError
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.http.passage import (
    admitted,
    relay,
    request_context,
    request_headers,
    response_headers,
)
from sluicegate.core.http.schemas import ChatCompletionRequest, EmbeddingRequest
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
    principal = await authenticate(request_headers(), gateway.services)
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
    ctx = await request_context(gateway, endpoint, schema)
    run = await admitted(gateway, ctx)
    response = ctx.response
    assert response is not None, "the pipeline validator requires a route stage"
    headers = response_headers(ctx)
    if response.stream is None:
        await run.finish_answer(Outcome(Fate.SERVED, response.status))
        return _json(response.body or {}, response.status, headers)
    shaped = _shaped(ctx, response.stream)
    streamed = Response(
        relay(run, shaped, _broken, source=response.stream),
        status=response.status,
        mimetype="text/event-stream",
        headers=headers,
    )
    streamed.headers["cache-control"] = "no-cache"
    streamed.timeout = None
    return streamed


def _broken(error: ProviderError) -> bytes:
    return error_event(f"the provider's stream broke off: {error}", "upstream_error")


def _shaped(ctx: RequestContext, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream as the client gets it: without the usage event it did not
    ask for, when a stage asked the provider for it (``STRIP_USAGE_EVENT``)."""
    if ctx.scratch.get(STRIP_USAGE_EVENT):
        return WithoutUsageEvent(stream)
    return stream


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status=status,
        mimetype="application/json",
        headers=headers or {},
    )
