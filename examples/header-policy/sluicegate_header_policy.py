"""A third-party stage: requests must carry a header with an allowed value.

Installed as its own distribution by the tests, found through the
``sluicegate`` entry-point group like any plugin a team would write.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sluicegate.core import hookimpl
from sluicegate.core.stage import Deny, Stage, StageConfig


class HeaderPolicyConfig(StageConfig):
    header: str = Field(description="The header every request must carry.")
    allowed: list[str] = Field(min_length=1, description="Its allowed values.")


class HeaderPolicyStage(Stage):
    type_name = "header_policy"
    Config = HeaderPolicyConfig

    async def before(self, ctx: Any) -> Deny | None:
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
