"""Built-in authentication: the API key of a proxied request.

Registered as a plugin whose ``sluicegate_authenticate`` runs last, so a
plugin (JWT, a trusted header) can recognise its own credentials first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sluicegate.core.errors import InvalidApiKey, ServiceUnavailable, StorageError
from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.plugins import first_result

if TYPE_CHECKING:
    from sluicegate.core.context import Principal
    from sluicegate.core.services import Services

HOW_TO_GET_A_KEY = "create one with: sluicegate key create --workspace NAME"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer …`` or Anthropic's ``x-api-key``."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


@hookimpl(trylast=True)
async def sluicegate_authenticate(
    headers: Mapping[str, str], services: Services
) -> Principal | None:
    key = presented_key(headers)
    if key is None:
        raise InvalidApiKey(
            "no API key: send 'Authorization: Bearer <key>'; " + HOW_TO_GET_A_KEY
        )
    try:
        principal = await services.keys.verify(key)
    except StorageError as exc:
        raise ServiceUnavailable(f"cannot check the API key: {exc}; retry") from exc
    if principal is None:
        raise InvalidApiKey("the API key is unknown or revoked; " + HOW_TO_GET_A_KEY)
    return principal


async def authenticate(headers: Mapping[str, str], services: Services) -> Principal:
    """Ask the authentication hooks who is calling; raise InvalidApiKey if nobody."""
    principal = await first_result(
        services.manager.hook.sluicegate_authenticate,
        headers=headers,
        services=services,
    )
    if principal is None:
        raise InvalidApiKey("no authentication plugin accepted the credentials")
    return principal  # type: ignore[no-any-return]
