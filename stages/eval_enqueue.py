"""The ``eval_enqueue`` stage: queue a served request for safety evaluation.

Put it after ``route``.  Its after-step runs once the response was released
(for a stream, after its last byte) and, for served requests only, hands a
job to the evaluation queue in a background task the process owns, so the
client never waits for it.  When the queue is unreachable the job is kept in
the database and queued later (:mod:`sluicegate.core.evals.deferred`); the
response is unaffected either way.

Each entry of ``evaluators`` names an evaluator with its ``weight`` in the
request's risk score, its ``timeout_seconds`` and its own settings::

    - type: eval_enqueue
      evaluators:
        - {name: pii}
        - {name: llm_judge, model: gpt-4o-mini, weight: 2}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sluicegate.core.context import Fate
from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.evals.bound import EvaluatorSpec, bind
from sluicegate.core.evals.deferred import submit
from sluicegate.core.evals.jobs import EvalJob
from sluicegate.core.evals.text import body_text, prompt_text, response_text
from sluicegate.core.http.passage import RELAY_TAPS
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services


class EvalEnqueueConfig(StageConfig):
    on_failure: Literal["open", "closed"] = Field(
        default="open",
        description="Never consulted: a queue outage defers the job, it "
        "never fails the request.",
    )
    evaluators: list[EvaluatorSpec] = Field(min_length=1)
    max_stream_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Of a streamed answer, at most this much is kept to judge.",
    )


class StreamCapture:
    """Keeps the bytes of a relayed stream, up to a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        if self.size < self.limit:
            kept = chunk[: self.limit - self.size]
            self.chunks.append(kept)
            self.size += len(kept)

    def text(self) -> str | None:
        return response_text(b"".join(self.chunks))


class EvalEnqueueStage(Stage):
    """Queues served requests for the evaluators it names."""

    type_name = "eval_enqueue"
    Config = EvalEnqueueConfig

    config: EvalEnqueueConfig

    def __init__(self, config: EvalEnqueueConfig, services: Services) -> None:
        super().__init__(config, services)
        problems: list[Problem] = []
        for index, spec in enumerate(config.evaluators):
            try:
                bind(spec, services, where=f"{self.id}.evaluators.{index}")
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

    async def before(self, ctx: RequestContext) -> Deny | None:
        if ctx.stream:
            capture = StreamCapture(self.config.max_stream_bytes)
            ctx.scratch[self.id] = capture
            ctx.scratch.setdefault(RELAY_TAPS, []).append(capture)
        return None

    async def after(self, ctx: RequestContext) -> None:
        queue = self.services.evals
        if queue is None or ctx.outcome is None or ctx.outcome.fate != Fate.SERVED:
            return
        job = self._job(ctx)
        self.services.spawn(submit(self.services, queue, job))

    def _job(self, ctx: RequestContext) -> EvalJob:
        return EvalJob(
            request_id=ctx.request_id,
            workspace_id=ctx.principal.workspace_id,
            workspace=ctx.principal.workspace,
            model=ctx.model,
            endpoint=ctx.endpoint,
            prompt=prompt_text(ctx.body),
            response=self._response(ctx),
            request_body=ctx.body,
            evaluators=list(self.config.evaluators),
        )

    def _response(self, ctx: RequestContext) -> str | None:
        capture = ctx.scratch.get(self.id)
        if isinstance(capture, StreamCapture):
            return capture.text()
        response = ctx.response
        if response is None or response.body is None:
            return None
        return body_text(response.body)
