"""The ``auth`` stage: what an authenticated API key may do in its workspace.

Authentication (which key, which workspace) happens before the pipeline is
chosen; this stage authorises: the models the workspace may use and,
optionally, the client networks it may call from.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from sluicegate.core.errors import ModelNotAllowed
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthConfig(StageConfig):
    models: list[str] | None = Field(
        default=None,
        description="Public model names this workspace may use; omitted: all.",
    )
    ip_allow: list[str] | None = Field(
        default=None,
        description="Client networks (CIDR) allowed to call; omitted: any.",
    )

    @field_validator("ip_allow")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for network in value or []:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{network!r} is not a network; write e.g. 10.0.0.0/8 or ::1/128"
                ) from exc
        return value


class AuthStage(Stage):
    """Refuses models and client networks the workspace does not allow."""

    type_name = "auth"
    Config = AuthConfig

    def __init__(self, config: AuthConfig, services: Services) -> None:
        super().__init__(config, services)
        self.models = frozenset(config.models) if config.models is not None else None
        self.networks: list[Network] = [
            ipaddress.ip_network(network, strict=False)
            for network in config.ip_allow or []
        ]

    async def before(self, ctx: RequestContext) -> Deny | None:
        if self.models is not None and ctx.model not in self.models:
            return Deny.of(
                ModelNotAllowed(
                    f"workspace {ctx.principal.workspace!r} may not use model "
                    f"{ctx.model!r}; allowed: {sorted(self.models)}"
                )
            )
        if self.networks and not self._ip_allowed(ctx.client_ip):
            return Deny(
                403,
                "ip_not_allowed",
                f"client address {ctx.client_ip} is not in this workspace's "
                "ip_allow list",
            )
        return None

    def visible_models(self, models: list[str]) -> list[str]:
        if self.models is None:
            return models
        return [model for model in models if model in self.models]

    def _ip_allowed(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self.networks)
