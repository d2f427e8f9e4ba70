"""The admin API's OpenAPI 3.1 document, generated from the operation table.

Paths, parameters, bodies and responses all come from
:data:`~sluicegate.core.http.admin.operations.OPERATIONS` and the pydantic
models it names, so the document describes exactly what the router serves.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sluicegate.core import __version__
from sluicegate.core.http.admin import models
from sluicegate.core.http.admin.call import Operation
from sluicegate.core.http.admin.operations import OPERATIONS

PREFIX = "/admin/v1"
REF = "#/components/schemas/{model}"
_PARAMETER = re.compile(r"\{(\w+)\}")
ERRORS = {
    "400": "The request body or query is invalid",
    "401": "No admin token, or an unknown or revoked one",
    "403": "A workspace-scoped token may not do this",
    "404": "No such workspace, key, run, request or route (or the admin API is off)",
}


def openapi_document() -> dict[str, Any]:
    """The whole document (build it once per process)."""
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        path = paths.setdefault(PREFIX + operation.path, {})
        path[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sluicegate admin API",
            "version": __version__,
            "description": "Workspaces, API keys, pipelines, usage and spend, "
            "audit verification and export, retention policies and evaluation "
            "runs. Bearer "
            "SLUICEGATE_ADMIN_TOKEN sees every workspace; a workspace-scoped "
            "token (sluicegate admin-token create) sees its own only.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _schemas() -> dict[str, Any]:
    used: set[type[BaseModel]] = {models.ErrorBody}
    for operation in OPERATIONS:
        used |= {m for m in (operation.response, operation.body) if m is not None}
    ordered = sorted(used, key=lambda model: model.__name__)
    mode_of = {model: "validation" for model in ordered if _is_input(model)}
    pairs = [(model, mode_of.get(model, "serialization")) for model in ordered]
    _, document = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = document.get("$defs", {})
    return schemas


def _is_input(model: type[BaseModel]) -> bool:
    return any(operation.body is model for operation in OPERATIONS)


def _operation(operation: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": operation.handler.__name__.removesuffix("_op"),
        "summary": operation.summary,
        "parameters": _parameters(operation),
        "responses": _responses(operation),
    }
    if operation.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    return described


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    found = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAMETER.findall(operation.path)
    ]
    if operation.query is not None:
        found += _query_parameters(operation.query)
    return found


def _query_parameters(query: type[BaseModel]) -> list[dict[str, Any]]:
    """One parameter per field of ``query``, typed by its JSON schema."""
    schema = query.model_json_schema()
    required = set(schema.get("required", ()))
    found = []
    for name, field in schema["properties"].items():
        described = {"name": name, "in": "query", "required": name in required}
        found.append({**described, "schema": _not_null(field)})
        if "description" in field:
            found[-1]["description"] = field["description"]
    return found


def _not_null(field: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without its ``null`` alternative (a query has none)."""
    kept = [part for part in field.get("anyOf", ()) if part != {"type": "null"}]
    schema = kept[0] if len(kept) == 1 else field
    return {key: value for key, value in schema.items() if key != "description"}


def _responses(operation: Operation) -> dict[str, Any]:
    ok = {
        "description": operation.summary,
        "content": {operation.media_type: {"schema": _ref(operation.response)}},
    }
    responses: dict[str, Any] = {str(operation.status): ok}
    for status, description in ERRORS.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": _ref(models.ErrorBody)}},
        }
    return responses


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}
