"""The admin API under ``/admin/v1/``: JSON, bearer tokens, OpenAPI-described.

Routes come from :data:`.operations.OPERATIONS`; each request is authorized
(:mod:`.access`), its body or query validated against the operation's model,
and the handler's model returned as JSON.  ``GET /admin/v1/openapi.json``
serves the document generated from the same table (:mod:`.openapi`).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, current_app, g, request
from quart.typing import RouteCallable

from sluicegate.core.errors import InvalidRequest
from sluicegate.core.http.admin.access import authorize
from sluicegate.core.http.admin.call import Call, Lines, Operation
from sluicegate.core.http.admin.openapi import PREFIX, openapi_document
from sluicegate.core.http.admin.operations import OPERATIONS
from sluicegate.core.http.gateway import Gateway

admin = Blueprint("admin", __name__, url_prefix=PREFIX)
OPENAPI_PATH = "/openapi.json"


@admin.get(OPENAPI_PATH)
async def openapi() -> Response:
    await authorize_request(document_only=True)
    document = current_app.extensions.get("sluicegate.admin.openapi")
    if document is None:
        document = current_app.extensions["sluicegate.admin.openapi"] = orjson.dumps(
            openapi_document()
        )
    return Response(document, mimetype="application/json")


async def authorize_request(*, document_only: bool = False) -> None:
    """Refuse the request unless the admin API is on (and, for data, a token)."""
    services = _gateway().services
    if document_only:
        if not services.settings.admin_token:
            await authorize(services, None)  # raises the 404 of an API that is off
        return
    g.admin_scope = await authorize(services, request.headers.get("authorization"))


def _gateway() -> Gateway:
    gateway: Gateway = current_app.extensions["sluicegate"]
    return gateway


def _view(operation: Operation) -> RouteCallable:
    async def view(**path: str) -> Response:
        await authorize_request()
        call = Call(
            gateway=_gateway(),
            scope=g.admin_scope,
            body=await _body(operation.body),
            query=_validated(operation.query, dict(request.args)),
        )
        result = await operation.handler(call, **path)
        body = result if isinstance(result, Lines) else result.model_dump_json()
        return Response(body, status=operation.status, mimetype=operation.media_type)

    view.__name__ = operation.handler.__name__
    return view


async def _body(model: type[BaseModel] | None) -> BaseModel | None:
    if model is None:
        return None
    raw = await request.get_data(as_text=False)
    try:
        parsed: Any = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not JSON ({exc}); send a JSON object", param="body"
        ) from exc
    return _validated(model, parsed)


def _validated(model: type[BaseModel] | None, data: Any) -> BaseModel | None:
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequest(
            f"invalid {where}: {first['msg']} (the admin API's OpenAPI document at "
            f"{PREFIX}{OPENAPI_PATH} describes every field)",
            param=where,
        ) from exc


for _operation in OPERATIONS:
    _rule = _operation.path.replace("{", "<").replace("}", ">")
    admin.add_url_rule(
        _rule,
        endpoint=_operation.handler.__name__,
        view_func=_view(_operation),
        methods=[_operation.method],
    )
