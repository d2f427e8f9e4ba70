"""One attempt at one target, in the shape of the request's endpoint.

``chat.completions`` and ``embeddings`` requests go to the provider as they
came (OpenAI-shaped).  A ``messages`` request (Anthropic-shaped, from
``POST /v1/messages``) goes natively to a provider that speaks the Messages
API, and through translation to any other: the request becomes an OpenAI chat
request and the answer, whole or streamed, becomes a Messages answer again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sluicegate.core.provider import Provider, UpstreamCall
from sluicegate.providers.anthropic_translate import (
    ChatToMessagesEvents,
    TranslatedStream,
    chat_to_messages_response,
    messages_to_chat_request,
)

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext, UpstreamResponse
    from sluicegate.core.gateway_config import Target


@runtime_checkable
class SpeaksMessages(Protocol):
    """A provider that serves Anthropic-shaped requests as they are."""

    async def messages(self, call: UpstreamCall) -> UpstreamResponse: ...


async def dispatch(
    provider: Provider, ctx: RequestContext, target: Target, remaining: float
) -> UpstreamResponse:
    """Send ``ctx``'s request to ``target`` with ``remaining`` seconds left."""
    if ctx.endpoint == "embeddings":
        return await provider.embeddings(_call(ctx, target, ctx.body, remaining))
    if ctx.endpoint != "messages":
        return await provider.chat(_call(ctx, target, ctx.body, remaining))
    if isinstance(provider, SpeaksMessages):
        return await provider.messages(_call(ctx, target, ctx.body, remaining))
    return await _translated(provider, ctx, target, remaining)


async def _translated(
    provider: Provider, ctx: RequestContext, target: Target, remaining: float
) -> UpstreamResponse:
    body = messages_to_chat_request(ctx.body)
    response = await provider.chat(_call(ctx, target, body, remaining))
    if response.stream is not None:
        events = ChatToMessagesEvents(ctx.model)
        response.stream = TranslatedStream(response.stream, events)
    elif response.body is not None:
        response.body = chat_to_messages_response(response.body, ctx.model)
    return response


def _call(
    ctx: RequestContext, target: Target, body: dict[str, object], remaining: float
) -> UpstreamCall:
    return UpstreamCall(
        target=target.name,
        model=target.model,
        body={**body, "model": target.model},
        stream=ctx.stream,
        request_id=ctx.request_id,
        timeout=remaining,
    )
