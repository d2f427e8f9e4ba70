"""Who is calling the admin API, and which workspaces they may see.

The admin API is off (every route 404) while ``SLUICEGATE_ADMIN_TOKEN`` is
unset.  A request's ``Authorization: Bearer`` token is either that operator
token, which sees every workspace, or a workspace-scoped token from the
``admin_token`` table, which sees its own workspace only: any other
workspace, key or record answers 404 exactly as if it did not exist.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sluicegate.core.admin_tokens import verify_admin_token
from sluicegate.core.errors import GatewayError, error_for
from sluicegate.core.services import Services


@dataclass(frozen=True)
class AdminScope:
    """The workspace a token is limited to; None: every workspace."""

    workspace: str | None

    def sees(self, workspace: str) -> bool:
        return self.workspace is None or self.workspace == workspace

    @property
    def is_operator(self) -> bool:
        return self.workspace is None


def not_found(message: str) -> GatewayError:
    return error_for(404, "not_found", message)


def forbidden(message: str) -> GatewayError:
    return error_for(403, "forbidden", message)


async def authorize(services: Services, authorization: str | None) -> AdminScope:
    """The scope of the presented bearer token; 404 if off, 401 if refused."""
    operator_token = services.settings.admin_token
    if not operator_token:
        raise not_found("the admin API is off; set SLUICEGATE_ADMIN_TOKEN to use it")
    token = _bearer(authorization)
    if token is None:
        raise _refused("no bearer token: send Authorization: Bearer <admin token>")
    if hmac.compare_digest(token.encode(), operator_token.encode()):
        return AdminScope(None)
    scoped = await verify_admin_token(services.database, token)
    if scoped is None:
        raise _refused("the admin token is unknown or revoked")
    return AdminScope(scoped.workspace)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _refused(message: str) -> GatewayError:
    error = error_for(401, "invalid_admin_token", message)
    error.headers["www-authenticate"] = 'Bearer realm="sluicegate-admin"'
    return error
