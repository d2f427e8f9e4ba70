"""An evaluation job and what a worker does with it.

A job carries everything a worker needs, so it never reads the request back:
the request's identity, its text and the answer's text, and the evaluator
specs of the workspace's ``eval_enqueue`` stage.  :func:`run_job` runs the
evaluators side by side, each within its timeout; a verdict becomes a result
of the evaluator's live run, a failure becomes a result carrying the error,
and the combined risk score is stored and observed in metrics.  Running a
job twice (a redelivery) stores nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from sluicegate.core.errors import ConfigError
from sluicegate.core.evals.bound import BoundEvaluator, EvaluatorSpec, bind
from sluicegate.core.evals.risk import Component, risk_score
from sluicegate.core.evals.runs import (
    ResultValues,
    add_result,
    add_risk,
    live_run,
)
from sluicegate.core.evaluator import Sample, Verdict

if TYPE_CHECKING:
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)

ERROR_CHARS = 2000


class EvalJob(BaseModel):
    """One served request to evaluate (JSON on the queue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    workspace_id: int
    workspace: str
    model: str
    endpoint: str
    prompt: str
    response: str | None
    request_body: dict[str, Any]
    evaluators: list[EvaluatorSpec]

    def sample(self) -> Sample:
        return Sample(
            request_id=self.request_id,
            workspace=self.workspace,
            model=self.model,
            prompt=self.prompt,
            response=self.response,
            request_body=self.request_body,
        )


@dataclass(frozen=True)
class Judged:
    """One evaluator's verdict on a sample, or why it has none."""

    bound: BoundEvaluator
    verdict: Verdict | None
    error: str | None = None

    def values(self) -> ResultValues:
        if self.verdict is None:
            return ResultValues(None, (), None, self.error or "no verdict")
        return ResultValues(
            self.verdict.score, self.verdict.labels, self.verdict.detail, None
        )


async def run_job(services: Services, job: EvalJob) -> float | None:
    """Evaluate ``job`` and store its results; return its risk score."""
    bound = _bind_all(services, job)
    if not bound:
        return None
    sample = job.sample()
    judged = await asyncio.gather(*(judge(item, sample) for item in bound))

    database = services.database
    for item in judged:
        run_id = await live_run(database, job.workspace_id, item.bound)
        await add_result(
            database, run_id, job.request_id, job.workspace_id, item.values()
        )
        services.metrics.evals.evaluation(item.bound.name, item.error is None)

    components = [
        Component(item.bound.name, item.bound.spec.weight, _score(item))
        for item in judged
    ]
    risk = risk_score(components)
    await add_risk(database, job.request_id, job.workspace_id, risk, components)
    services.metrics.evals.risk(job.workspace, risk)
    return risk


def _bind_all(services: Services, job: EvalJob) -> list[BoundEvaluator]:
    bound = []
    for spec in job.evaluators:
        try:
            bound.append(bind(spec, services))
        except ConfigError as exc:
            log.error(
                "request %s: evaluator %s cannot run in this process: %s",
                job.request_id,
                spec.name,
                exc,
            )
    return bound


async def judge(bound: BoundEvaluator, sample: Sample) -> Judged:
    """Run one evaluator within its timeout; a failure becomes an error."""
    timeout = bound.spec.timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            verdict = await bound.evaluator.evaluate(sample)
    except TimeoutError:
        return Judged(bound, None, f"no verdict within {timeout:g}s")
    except Exception as exc:
        log.warning(
            "evaluator %s failed on request %s",
            bound.name,
            sample.request_id,
            exc_info=True,
        )
        return Judged(bound, None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    return Judged(bound, verdict)


def _score(item: Judged) -> float | None:
    return item.verdict.score if item.verdict is not None else None
