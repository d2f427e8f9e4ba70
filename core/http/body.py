"""Reading and validating a request body before anything is sent upstream."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from quart import Request

from sluicegate.core.errors import InvalidRequest, RequestTooLarge
from sluicegate.core.validation import problems_of

Schema = TypeVar("Schema", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, schema: type[Schema]) -> dict[str, Any]:
    """Decode JSON and check it against ``schema``; 400 with field-level detail."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON ({exc}); send a JSON object encoded as UTF-8"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the body is a JSON {type(body).__name__}; send a JSON object"
        )
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        problems = problems_of(exc, "body")
        detail = "; ".join(f"{p.path}: got {p.got}; {p.allowed}" for p in problems)
        raise InvalidRequest(
            f"invalid request body: {detail}", param=problems[0].path
        ) from exc
    return body


def _too_large(size: int, limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"the body has at least {size} bytes; the limit is {limit} bytes "
        "(SLUICEGATE_MAX_BODY_BYTES)"
    )
