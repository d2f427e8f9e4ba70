"""What the audit stage takes from a finished request: the record's fields.

:class:`ResponseTap` sees every chunk of a relayed stream (the proxy calls it
through ``ctx.scratch["relay_taps"]``), so the record hashes exactly the bytes
the client got.  A whole JSON answer is hashed as the proxy sends it
(``orjson.dumps`` of the body).

Costs come from ``ctx.scratch["cost_micros"]`` (an integer of micro-dollars),
which a stage that prices requests (the budget stage) sets; without one the
cost is 0.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from sluicegate.core.audit.record import Payload, PendingRecord, sha256_hex
from sluicegate.core.context import RequestContext
from sluicegate.core.redact import redact

COST_KEY = "cost_micros"
REQUEST_KIND = "request"
REQUEST_SHA256_KEY = "audit.request_sha256"
"""``ctx.scratch`` key: the request body's digest, once the audit stage took it."""


class ResponseTap:
    """Hashes (and, when payloads are kept, collects) relayed stream bytes."""

    def __init__(self, keep: bool) -> None:
        self.hash = hashlib.sha256()
        self.chunks: list[bytes] | None = [] if keep else None
        self.seen = False

    def __call__(self, chunk: bytes) -> None:
        self.seen = True
        self.hash.update(chunk)
        if self.chunks is not None:
            self.chunks.append(chunk)


def request_record(
    ctx: RequestContext, policy: str, tap: ResponseTap | None
) -> PendingRecord:
    """The pending audit record of a finished request."""
    response = _response_bytes(ctx, tap)
    payload = _payload(ctx, policy, response)
    fields = {
        **_outcome_fields(ctx),
        "key_id": ctx.principal.key_id,
        "client_ip": ctx.client_ip,
        "endpoint": ctx.endpoint,
        "model": ctx.model,
        "stream": ctx.stream,
        "latency_ms": round((time.perf_counter() - ctx.started) * 1000),
        "upstream_ms": round(ctx.upstream_seconds * 1000),
        "decisions": [
            {"stage": d.stage, "decision": d.decision, "detail": d.detail}
            for d in ctx.decisions
        ],
        "request_sha256": request_digest(ctx),
        "response_sha256": _response_digest(ctx, tap, response),
        "payload_policy": policy,
        "payload_sha256": payload.digest() if payload else None,
    }
    return PendingRecord(
        workspace_id=ctx.principal.workspace_id,
        request_id=ctx.request_id,
        kind=REQUEST_KIND,
        created_at=datetime.now(UTC),
        fields=fields,
        payload=payload,
    )


def request_digest(ctx: RequestContext) -> str:
    """The SHA-256 of the request body, computed once per request."""
    known = ctx.scratch.get(REQUEST_SHA256_KEY)
    if not isinstance(known, str):
        known = ctx.scratch[REQUEST_SHA256_KEY] = sha256_hex(ctx.raw_body)
    return known


def _outcome_fields(ctx: RequestContext) -> dict[str, Any]:
    outcome = ctx.outcome
    response = ctx.response
    usage = response.usage if response is not None else None
    return {
        "fate": outcome.fate.value if outcome else None,
        "status": outcome.status if outcome else None,
        "error_code": outcome.error_code if outcome else None,
        "denied_by": outcome.denied_by if outcome else None,
        "target": response.target if response is not None else None,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "cost_micros": int(ctx.scratch.get(COST_KEY, 0)),
    }


def _response_bytes(ctx: RequestContext, tap: ResponseTap | None) -> bytes | None:
    response = ctx.response
    if response is None:
        return None
    if response.stream is None:
        return orjson.dumps(response.body or {})
    if tap is not None and tap.chunks is not None:
        return b"".join(tap.chunks)
    return None


def _response_digest(
    ctx: RequestContext, tap: ResponseTap | None, response: bytes | None
) -> str | None:
    if ctx.response is not None and ctx.response.stream is not None:
        return tap.hash.hexdigest() if tap is not None and tap.seen else None
    return sha256_hex(response) if response is not None else None


def _payload(
    ctx: RequestContext, policy: str, response: bytes | None
) -> Payload | None:
    if policy == "hash":
        return None
    request_text = ctx.raw_body.decode("utf-8", "replace")
    response_text = (response or b"").decode("utf-8", "replace")
    if policy == "redact":
        request_text, response_text = redact(request_text), redact(response_text)
    return Payload(policy, request_text, response_text, _subject(ctx))


def _subject(ctx: RequestContext) -> str | None:
    """The end user the client names: the principal's, else OpenAI's ``user``."""
    user = ctx.principal.subject or ctx.body.get("user")
    return user[:255] if isinstance(user, str) and user else None
