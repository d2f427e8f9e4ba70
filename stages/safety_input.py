"""The ``safety_input`` stage: fast heuristic evaluators on the request,
before the upstream call.

Its evaluators (only ``fast`` ones: local pattern checks) judge the request's
text; their scores combine into one risk score the same way as for
evaluations (:mod:`sluicegate.core.evals.risk`).  Above ``block_above`` the
request is refused with 400 ``invalid_request`` naming what was found, or,
with ``action: flag``, let through and recorded.  An evaluator that fails is
an infrastructure failure: ``on_failure`` decides (``closed``, the default,
answers 503; ``open`` lets the request through, counted).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from sluicegate.core.errors import ConfigError, InfrastructureError, Problem
from sluicegate.core.evals.bound import BoundEvaluator, EvaluatorSpec, bind
from sluicegate.core.evals.jobs import Judged, judge
from sluicegate.core.evals.risk import Component, risk_score
from sluicegate.core.evals.text import prompt_text
from sluicegate.core.evaluator import Sample
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services


class SafetyInputConfig(StageConfig):
    evaluators: list[EvaluatorSpec] = Field(min_length=1)
    block_above: float = Field(default=0.8, ge=0, le=1)
    action: Literal["block", "flag"] = Field(
        default="block",
        description="Above block_above: refuse the request (block) or only "
        "record it (flag).",
    )

    @field_validator("evaluators", mode="before")
    @classmethod
    def _names_or_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class SafetyInputStage(Stage):
    """Scores the request's text; blocks or flags it above the threshold."""

    type_name = "safety_input"
    Config = SafetyInputConfig

    config: SafetyInputConfig

    def __init__(self, config: SafetyInputConfig, services: Services) -> None:
        super().__init__(config, services)
        self.bound = _fast_evaluators(config, services, self.id)

    async def before(self, ctx: RequestContext) -> Deny | None:
        sample = Sample(
            request_id=ctx.request_id,
            workspace=ctx.principal.workspace,
            model=ctx.model,
            prompt=prompt_text(ctx.body),
            response=None,
            request_body=ctx.body,
        )
        judged = await asyncio.gather(*(judge(item, sample) for item in self.bound))
        _raise_failures(judged)

        risk = risk_score(
            [
                Component(j.bound.name, j.bound.spec.weight, j.verdict.score)
                for j in judged
                if j.verdict
            ]
        )
        labels = sorted(
            {label for j in judged if j.verdict for label in j.verdict.labels}
        )
        if risk <= self.config.block_above:
            return None
        return self._over_threshold(ctx, risk, labels)

    def _over_threshold(
        self, ctx: RequestContext, risk: float, labels: list[str]
    ) -> Deny | None:
        found = ", ".join(labels) or "no labels"
        self.services.metrics.evals.input_flags.labels(
            ctx.principal.workspace, self.config.action
        ).inc()
        ctx.decide(self.id, self.config.action, f"risk {risk:.2f}: {found}")
        if self.config.action == "flag":
            return None
        return Deny(
            400,
            "invalid_request",
            f"the request was blocked by the gateway's input safety check: risk "
            f"{risk:.2f} is above the workspace's limit of "
            f"{self.config.block_above:g} (found: {found}); remove that content "
            "and retry",
        )


def _fast_evaluators(
    config: SafetyInputConfig, services: Services, stage_id: str
) -> list[BoundEvaluator]:
    bound, problems = [], []
    for index, spec in enumerate(config.evaluators):
        where = f"{stage_id}.evaluators.{index}"
        try:
            item = bind(spec, services, where=where)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if not item.evaluator.fast:
            problems.append(
                Problem(
                    where,
                    "name",
                    repr(spec.name),
                    "a fast evaluator (it runs before the upstream call); run "
                    "slow ones in the background with an eval_enqueue stage",
                )
            )
        bound.append(item)
    if problems:
        raise ConfigError(problems)
    return bound


def _raise_failures(judged: list[Judged]) -> None:
    failed = [j for j in judged if j.verdict is None]
    if failed:
        names = ", ".join(f"{j.bound.name} ({j.error})" for j in failed)
        raise InfrastructureError("evaluator", f"input evaluators failed: {names}")
