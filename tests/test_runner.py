"""The runner: before steps in order, after steps in reverse for every stage
that ran, denials and infrastructure failures as the stage's on_failure says."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

import anyio
import pytest

from sluicegate.core.context import (
    Fate,
    Outcome,
    Principal,
    RequestContext,
    UpstreamResponse,
)
from sluicegate.core.errors import InfrastructureError, ServiceUnavailable
from sluicegate.core.metrics import Metrics
from sluicegate.core.pipeline import parse_pipeline
from sluicegate.core.plugins import build_manager
from sluicegate.core.runner import Pipeline
from sluicegate.core.settings import Settings
from sluicegate.core.stage import Deny, Stage, StageConfig

pytestmark = pytest.mark.anyio


class Probe(Stage):
    """Records its calls in ``ctx.scratch['log']``; behaves as its config says."""

    type_name = "probe"

    class Config(StageConfig):
        deny: bool = False
        broken: bool = False
        hang: bool = False

    async def before(self, ctx: RequestContext) -> Deny | None:
        ctx.scratch.setdefault("log", []).append(f"before:{self.id}")
        if self.config.broken:
            raise InfrastructureError("redis", "connection refused")
        if self.config.hang:
            await anyio.sleep_forever()
        if self.config.deny:
            return Deny(429, "rate_limit_exceeded", "slow down", {"retry-after": "1"})
        return None

    async def after(self, ctx: RequestContext) -> None:
        assert ctx.outcome is not None
        ctx.scratch["log"].append(f"after:{self.id}:{ctx.outcome.fate}")


class Answer(Stage):
    type_name = "answer"
    produces_response: ClassVar[bool] = True

    async def before(self, ctx: RequestContext) -> Deny | None:
        ctx.scratch.setdefault("log", []).append("before:answer")
        ctx.response = UpstreamResponse(status=200, target="t/m", body={})
        return None

    async def after(self, ctx: RequestContext) -> None:
        ctx.scratch["log"].append("after:answer")


def pipeline(*stages: dict[str, Any]) -> Pipeline:
    manager, _ = build_manager(Settings(plugins_autoload=False))
    types = {"probe": Probe, "answer": Answer}
    spec = parse_pipeline({"stages": list(stages)}, types, source="test")
    services = SimpleNamespace(manager=manager, metrics=Metrics())
    return Pipeline(spec, services)  # type: ignore[arg-type]


def context() -> RequestContext:
    return RequestContext(
        request_id="req_1",
        principal=Principal(1, "acme", 1),
        endpoint="chat.completions",
        body={},
        raw_body=b"{}",
        client_ip="127.0.0.1",
        headers={},
        model="m",
    )


async def test_befores_run_in_order_and_afters_in_reverse() -> None:
    ctx = context()
    run = await pipeline(
        {"type": "probe", "id": "a"}, {"type": "probe", "id": "b"}, {"type": "answer"}
    ).admit(ctx)
    await run.finish(Outcome(Fate.SERVED, 200))
    assert ctx.scratch["log"] == [
        "before:a",
        "before:b",
        "before:answer",
        "after:answer",
        "after:b:served",
        "after:a:served",
    ]


async def test_a_denial_stops_the_chain_and_still_runs_the_afters_that_ran() -> None:
    ctx = context()
    stages = pipeline(
        {"type": "probe", "id": "a"},
        {"type": "probe", "id": "limit", "deny": True},
        {"type": "answer"},
    )
    with pytest.raises(Exception) as caught:
        await stages.admit(ctx)
    assert caught.value.status == 429  # type: ignore[attr-defined]
    assert caught.value.headers == {"retry-after": "1"}  # type: ignore[attr-defined]
    assert ctx.scratch["log"] == [
        "before:a",
        "before:limit",
        "after:limit:denied",
        "after:a:denied",
    ]
    assert ctx.outcome == Outcome(Fate.DENIED, 429, "rate_limit_exceeded", "limit")


async def test_a_broken_stage_that_fails_open_lets_the_request_through() -> None:
    ctx = context()
    stages = pipeline(
        {"type": "probe", "id": "limit", "broken": True, "on_failure": "open"},
        {"type": "answer"},
    )
    run = await stages.admit(ctx)
    await run.finish(Outcome(Fate.SERVED, 200))
    assert ctx.response is not None
    assert [(d.stage, d.decision) for d in ctx.decisions] == [("limit", "fail_open")]
    sample = stages.services.metrics.registry.get_sample_value(
        "sluicegate_fail_open_admissions_total", {"stage": "limit"}
    )
    assert sample == 1.0


async def test_a_broken_stage_that_fails_closed_answers_503() -> None:
    ctx = context()
    stages = pipeline(
        {"type": "probe", "id": "budget", "broken": True}, {"type": "answer"}
    )
    with pytest.raises(ServiceUnavailable, match="cannot reach redis"):
        await stages.admit(ctx)
    assert ctx.outcome is not None and ctx.outcome.status == 503
    assert ctx.scratch["log"] == ["before:budget", "after:budget:failed"]


async def test_a_cancelled_request_still_runs_every_after_step() -> None:
    ctx = context()
    stages = pipeline(
        {"type": "probe", "id": "a"},
        {"type": "probe", "id": "b", "hang": True},
        {"type": "answer"},
    )
    with anyio.move_on_after(0.05):
        await stages.admit(ctx)
    assert ctx.scratch["log"] == [
        "before:a",
        "before:b",
        "after:b:cancelled",
        "after:a:cancelled",
    ]


class SlowAfter(Stage):
    """Its after step takes a while, so cancellations can arrive meanwhile."""

    type_name = "slow_after"

    async def after(self, ctx: RequestContext) -> None:
        await anyio.sleep(0.2)
        ctx.scratch.setdefault("log", []).append("after:slow")


async def test_after_steps_survive_repeated_cancellation_of_the_request() -> None:
    manager, _ = build_manager(Settings(plugins_autoload=False))
    types = {"slow_after": SlowAfter, "answer": Answer}
    spec = parse_pipeline(
        {"stages": [{"type": "slow_after"}, {"type": "answer"}]}, types, source="t"
    )
    services = SimpleNamespace(manager=manager, metrics=Metrics())
    stages = Pipeline(spec, services)  # type: ignore[arg-type]
    ctx = context()
    run = await stages.admit(ctx)

    async def hang_up() -> None:
        try:
            await anyio.sleep_forever()
        except BaseException:
            await run.finish(Outcome(Fate.CANCELLED, 499))
            raise

    task = asyncio.get_running_loop().create_task(hang_up())
    await anyio.sleep(0.01)
    task.cancel()  # the client hangs up ...
    await anyio.sleep(0.05)
    task.cancel()  # ... and the server cancels the request's task once more
    with pytest.raises(asyncio.CancelledError):
        await task
    await stages.close()  # waits for after steps still running
    assert ctx.scratch["log"] == ["before:answer", "after:answer", "after:slow"]


async def test_finishing_twice_runs_the_afters_once() -> None:
    ctx = context()
    run = await pipeline({"type": "answer"}).admit(ctx)
    await run.finish(Outcome(Fate.SERVED, 200))
    await run.finish(Outcome(Fate.CANCELLED, 499))
    assert ctx.scratch["log"] == ["before:answer", "after:answer"]
    assert ctx.outcome is not None and ctx.outcome.fate is Fate.SERVED


async def test_a_retired_pipeline_closes_when_its_last_request_ends() -> None:
    closed: list[str] = []
    stages = pipeline({"type": "answer"})

    async def close() -> None:
        closed.append("closed")

    stages.stages[0].close = close  # type: ignore[method-assign]
    run = await stages.admit(context())
    stages.retire()
    assert closed == []
    await run.finish(Outcome(Fate.SERVED, 200))
    assert closed == ["closed"]
