"""An example stage plugin: requests must carry a header with an allowed value.

Found through the ``sluicegate`` entry-point group like any plugin a team
writes; registered by the ``sluicegate_stage_types`` hook below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from sluicegate.core import hookimpl
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext


class HeaderPolicyConfig(StageConfig):
    header: str = Field(min_length=1, description="The header to require.")
    allowed: list[str] = Field(min_length=1, description="Its allowed values.")


class HeaderPolicyStage(Stage):
    """Denies requests whose header is missing or not an allowed value."""

    type_name = "header_policy"
    Config = HeaderPolicyConfig

    async def before(self, ctx: RequestContext) -> Deny | None:
        value = ctx.headers.get(self.config.header.lower())
        if value in self.config.allowed:
            ctx.decide(self.id, "allow", value)
            return None
        return Deny(
            403,
            "header_policy_violation",
            f"header {self.config.header!r} must be one of {self.config.allowed}; "
            f"got {value!r}",
        )


@hookimpl
def sluicegate_stage_types() -> list[type[Stage]]:
    return [HeaderPolicyStage]
