"""Error responses in the OpenAI shape ``{"error": {message, type, code, param}}``."""

from __future__ import annotations

import orjson
from quart import Response

from sluicegate.core.errors import GatewayError


def error_body(error: GatewayError) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "code": error.code,
                "param": error.param,
            }
        }
    )


def error_response(error: GatewayError, request_id: str) -> Response:
    response = Response(
        error_body(error), status=error.status, mimetype="application/json"
    )
    response.headers.update(error.headers)
    response.headers["x-request-id"] = request_id
    return response
