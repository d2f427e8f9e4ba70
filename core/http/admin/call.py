"""What every admin operation is made of: the call it gets, what it may return,
and the one check that keeps a scoped token inside its workspace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sluicegate.core.http.admin.access import AdminScope, not_found
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.workspaces import WorkspaceRow, get_workspace

JSON = "application/json"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Call:
    """One admin request: who calls, the gateway, the validated body or query."""

    gateway: Gateway
    scope: AdminScope
    body: Any = None
    query: Any = None


@dataclass(frozen=True)
class Lines:
    """A response of JSON Lines, streamed: the first line already read.

    Reading the first line before the response starts turns a failure to
    start (an unknown workspace, the database down) into an error response
    rather than an empty 200.
    """

    # TODO(admin-export): a failure after the first line cuts the stream short
    # under a 200; a reader notices only by the seq and hash links it checks.

    first: str | None
    rest: AsyncIterator[str]

    @classmethod
    async def primed(cls, lines: AsyncIterator[str]) -> Lines:
        return cls(await anext(lines, None), lines)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.first is None:
            return
        yield (self.first + "\n").encode()
        async for line in self.rest:
            yield (line + "\n").encode()


Handler = Callable[..., Awaitable[BaseModel | Lines]]


@dataclass(frozen=True)
class Operation:
    """One route: method, OpenAPI path, handler and the models it speaks.

    ``response`` describes the whole JSON body, or one line when
    ``media_type`` is JSON Lines.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    media_type: str = JSON


async def visible_workspace(call: Call, name: str) -> WorkspaceRow:
    """The workspace ``name`` if the caller may see it; 404 otherwise."""
    row = await get_workspace(call.gateway.services.database, name)
    if row is None or not call.scope.sees(row.name):
        raise not_found(f"no workspace {name!r}; GET /admin/v1/workspaces lists them")
    return row
