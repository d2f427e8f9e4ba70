"""The building block of a pipeline: a stage with a before and an after step.

A stage type is a :class:`Stage` subclass with a ``type_name`` and a pydantic
``Config`` (its YAML settings).  Plugins return stage types from the
``sluicegate_stage_types`` hook; the pipeline loader validates each YAML entry
against its type's ``Config`` and builds one instance per pipeline.

The runner calls :meth:`Stage.before` in declared order.  ``None`` lets the
request continue; a :class:`Deny` stops it with that HTTP error.  An
:class:`~sluicegate.core.errors.InfrastructureError` raised by a before step is
not a denial: the stage's ``on_failure`` decides (``open`` continues, ``closed``
answers 503).  :meth:`Stage.after` runs, in reverse order, for every stage whose
before step ran, whatever happened later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.core.errors import GatewayError, error_for

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services


class StageConfig(BaseModel):
    """Settings every stage entry of a pipeline file has.

    A stage type's ``Config`` subclasses this and adds its own fields.  Unknown
    fields are refused, so a misspelt setting is an error, not a silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    id: str | None = Field(
        default=None,
        description="A name for this stage in logs and audit records; "
        "defaults to the type.",
    )
    on_failure: Literal["open", "closed"] = Field(
        default="closed",
        description="On an infrastructure failure (Redis or the DB down): "
        "open lets the request continue, closed answers 503.",
    )


@dataclass(frozen=True)
class Deny:
    """A stage's typed refusal: the HTTP status, error code and message."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, error: GatewayError) -> Deny:
        return cls(error.status, error.code, error.message, dict(error.headers))

    def to_error(self) -> GatewayError:
        error = error_for(self.status, self.code, self.message)
        error.headers.update(self.headers)
        return error


class Stage:
    """Base class of stage types; override what the stage needs."""

    type_name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    produces_response: ClassVar[bool] = False
    """True for stages (like ``route``) that set ``ctx.response``."""
    must_be_first: ClassVar[bool] = False
    """True for stages (like ``audit``) that must see every request."""

    def __init__(self, config: Any, services: Services) -> None:
        self.config = config
        self.services = services
        self.id: str = config.id or config.type

    @property
    def fails_open(self) -> bool:
        return bool(self.config.on_failure == "open")

    @property
    def holds_answers(self) -> bool:
        """True if a whole answer may be sent only once the after steps ran.

        By default a whole answer is sent first and the after steps run right
        after it, off the client's latency; a stage whose after step is a
        promise to the client (an audit record kept before the answer leaves)
        says True.
        """
        return False

    async def before(self, ctx: RequestContext) -> Deny | None:
        """Run before the upstream call; ``None`` continues, a Deny stops."""
        return None

    def visible_models(self, models: list[str]) -> list[str]:
        """The public models a workspace may see in ``GET /v1/models``."""
        return models

    async def after(self, ctx: RequestContext) -> None:
        """Run once the request has ended (``ctx.outcome`` is set)."""

    async def close(self) -> None:
        """Release what the stage holds when its pipeline is replaced or closed."""
