"""Running a pipeline: before-steps in order, after-steps in reverse.

:func:`Pipeline.admit` runs the before steps and returns a :class:`Run`; the
HTTP layer sends the response and then calls :meth:`Run.finish`, which runs the
after step of every stage whose before step ran, shielded from cancellation,
so reservations are released whatever happened (a denial, an upstream failure,
a client that hung up mid-stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluicegate.core.context import Fate, Outcome, RequestContext
from sluicegate.core.errors import (
    GatewayError,
    InfrastructureError,
    ServiceUnavailable,
)
from sluicegate.core.logs import bound_stage
from sluicegate.core.pipeline import PipelineSpec
from sluicegate.core.plugins import resolve
from sluicegate.core.stage import Stage

if TYPE_CHECKING:
    from sluicegate.core.services import Services

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One request's passage: the stages whose before step ran."""

    pipeline: Pipeline
    ctx: RequestContext
    ran: list[Stage] = field(default_factory=list)
    finished: bool = False

    async def finish(self, outcome: Outcome) -> None:
        """Record the outcome and run the after steps, exactly once.

        They run in a task of their own that the caller's cancellation cannot
        reach: a server may cancel a hung-up request's task more than once,
        and a second cancel breaks through a cancel scope's shield, which
        would leak reservations and lose audit records.
        """
        if self.finished:
            return
        self.finished = True
        self.ctx.outcome = outcome
        await asyncio.shield(self.pipeline.track(self._after_steps()))

    async def finish_answer(self, outcome: Outcome) -> None:
        """Finish a whole answer that is about to be sent.

        Its after steps run once it is sent, in a task the pipeline tracks (a
        closing pipeline waits for them), unless a stage holds answers until
        they ran (:attr:`Stage.holds_answers`).
        """
        if self.pipeline.holds_answers:
            await self.finish(outcome)
            return
        if self.finished:
            return
        self.finished = True
        self.ctx.outcome = outcome
        self.pipeline.track(self._after_steps())

    async def finish_stream(
        self, stream: AsyncIterator[bytes], outcome: Outcome
    ) -> None:
        """Close the provider's stream, then finish, out of the caller's reach.

        A relay calls this from its ``finally``; awaiting the close there
        directly would let a second cancellation skip the after steps.  The
        stream's end waits for them only if a stage holds answers.
        """
        ending = self.pipeline.track(self._close_then_finish(stream, outcome))
        if self.pipeline.holds_answers:
            await asyncio.shield(ending)

    async def _close_then_finish(
        self, stream: AsyncIterator[bytes], outcome: Outcome
    ) -> None:
        try:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self.finish(outcome)

    async def _after_steps(self) -> None:
        for stage in reversed(self.ran):
            await self._after(stage)
        self.pipeline.services.metrics.observe(self.ctx)
        await self._completed()
        await self.pipeline.release()

    async def _after(self, stage: Stage) -> None:
        try:
            with bound_stage(stage.id):
                await stage.after(self.ctx)
        except Exception:
            log.exception("after step of stage %s failed", stage.id)

    async def _completed(self) -> None:
        hook = self.pipeline.services.manager.hook.sluicegate_request_completed
        for result in hook(ctx=self.ctx):
            try:
                await resolve(result)
            except Exception:
                log.exception("a sluicegate_request_completed hook failed")


class Pipeline:
    """A workspace's stages, built once from a validated file."""

    def __init__(self, spec: PipelineSpec, services: Services) -> None:
        self.spec = spec
        self.services = services
        self.stages = [
            stage_type(config, services) for stage_type, config in spec.stages
        ]
        self.holds_answers = any(stage.holds_answers for stage in self.stages)
        self.active = 0
        self.retired = False
        self.finishing: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None

    async def admit(self, ctx: RequestContext) -> Run:
        """Run before steps; return the Run, or raise the request's GatewayError.

        On a denial or failure the after steps have already run when this raises.
        """
        run = Run(self, ctx)
        self.active += 1
        try:
            for stage in self.stages:
                run.ran.append(stage)
                await self._before(stage, ctx)
        except GatewayError as error:
            await run.finish(_outcome_of(error, ctx))
            raise
        except asyncio.CancelledError:
            await run.finish(Outcome(Fate.CANCELLED, 499, "cancelled"))
            raise
        except Exception:
            await run.finish(Outcome(Fate.FAILED, 500, "internal_error"))
            raise
        return run

    async def _before(self, stage: Stage, ctx: RequestContext) -> None:
        try:
            with bound_stage(stage.id):
                deny = await stage.before(ctx)
        except InfrastructureError as exc:
            self._infrastructure_failure(stage, ctx, exc)
            return
        if deny is not None:
            ctx.decide(stage.id, "deny", deny.code)
            error = deny.to_error()
            error.denied_by = stage.id
            raise error

    def _infrastructure_failure(
        self, stage: Stage, ctx: RequestContext, exc: InfrastructureError
    ) -> None:
        self.services.metrics.infrastructure_error(stage.id, exc.service)
        if not stage.fails_open:
            ctx.decide(stage.id, "fail_closed", exc.service)
            log.warning("stage %s fails closed: %s", stage.id, exc)
            error = ServiceUnavailable(
                f"the {stage.id} stage cannot reach {exc.service} and is set to "
                "fail closed; retry shortly"
            )
            raise error from exc
        ctx.decide(stage.id, "fail_open", exc.service)
        self.services.metrics.fail_open(stage.id)
        log.warning("stage %s fails open: %s", stage.id, exc)

    def visible_models(self, models: list[str]) -> list[str]:
        """The models every stage lets this pipeline's workspace see."""
        for stage in self.stages:
            models = stage.visible_models(models)
        return models

    def track(self, steps: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a request's after steps as a task this pipeline keeps until done."""
        task = asyncio.get_running_loop().create_task(steps)
        self.finishing.add(task)
        gauge = self.services.metrics.observability.finishing
        gauge.inc()
        task.add_done_callback(self._tracked_done)
        return task

    def _tracked_done(self, task: asyncio.Task[None]) -> None:
        self.finishing.discard(task)
        self.services.metrics.observability.finishing.dec()

    async def release(self) -> None:
        """A request has finished; close a retired pipeline when none is left."""
        self.active -= 1
        if self.retired and self.active == 0:
            await self.close()

    def retire(self) -> None:
        """This pipeline was replaced: close it once no request uses it."""
        self.retired = True
        if self.active == 0 and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        """Wait for after steps still running, then close every stage."""
        others = self.finishing - {asyncio.current_task()}
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        for stage in self.stages:
            try:
                await stage.close()
            except Exception:
                log.exception("closing stage %s failed", stage.id)


def _outcome_of(error: GatewayError, ctx: RequestContext) -> Outcome:
    fate = Fate.DENIED if error.denied_by or error.status < 500 else Fate.FAILED
    return Outcome(fate, error.status, error.code, error.denied_by)
