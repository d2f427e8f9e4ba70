"""Evaluation runs over the admin API: list a workspace's runs, compare two
runs, read every verdict and the risk score of one request.

The same functions as ``sluicegate evals list|compare`` read the runs
(:mod:`sluicegate.core.evals.runs`, :mod:`sluicegate.core.evals.compare`).
A scoped token sees only runs of its workspace: a re-run over every
workspace belongs to none, so only the operator token sees it.
"""

from __future__ import annotations

from dataclasses import asdict

from sluicegate.core.errors import GatewayError, InvalidRequest
from sluicegate.core.evals.compare import Comparison, compare
from sluicegate.core.evals.runs import (
    RunRow,
    get_run,
    list_runs,
    request_results,
    risk_of,
    run_results,
)
from sluicegate.core.http.admin import models
from sluicegate.core.http.admin.access import not_found
from sluicegate.core.http.admin.call import Call, visible_workspace
from sluicegate.core.observability.scrub import scrub_value


async def list_runs_op(call: Call, workspace: str) -> models.EvaluationRunList:
    row = await visible_workspace(call, workspace)
    query: models.EvaluationRunsQuery = call.query
    runs = await list_runs(call.gateway.services.database, query.evaluator, row.name)
    return models.EvaluationRunList(data=[_run(run) for run in runs])


async def compare_runs_op(call: Call) -> models.Comparison:
    query: models.CompareQuery = call.query
    run_a = await _visible_run(call, query.run_a)
    run_b = await _visible_run(call, query.run_b)
    database = call.gateway.services.database
    comparison = compare(
        await run_results(database, run_a.id), await run_results(database, run_b.id)
    )
    return _comparison(run_a, run_b, comparison)


async def request_evaluations_op(
    call: Call, workspace: str, request_id: str
) -> models.RequestEvaluations:
    row = await visible_workspace(call, workspace)
    database = call.gateway.services.database
    results = await request_results(database, request_id, workspace_id=row.id)
    risk = await risk_of(database, request_id, workspace_id=row.id)
    if not results and risk is None:
        raise not_found(
            f"workspace {row.name!r} has no evaluations of request {request_id!r} "
            "(the x-request-id of its response)"
        )
    return models.RequestEvaluations(
        workspace=row.name,
        request_id=request_id,
        risk=None if risk is None else models.RiskScore.model_validate(risk),
        results=[models.EvaluationResult.model_validate(found) for found in results],
    )


async def _visible_run(call: Call, run_id: int) -> RunRow:
    """Run ``run_id`` if the caller may see it; 404 as if absent otherwise."""
    try:
        run = await get_run(call.gateway.services.database, run_id)
    except InvalidRequest as exc:
        raise _no_run(run_id) from exc
    if not call.scope.is_operator and (
        run.workspace is None or not call.scope.sees(run.workspace)
    ):
        raise _no_run(run_id)
    return run


def _no_run(run_id: int) -> GatewayError:
    return not_found(
        f"no evaluation run {run_id}; GET "
        "/admin/v1/workspaces/{workspace}/evals/runs lists a workspace's runs"
    )


def _run(run: RunRow) -> models.EvaluationRun:
    fields = asdict(run)
    fields["config"] = scrub_value(run.config)
    return models.EvaluationRun.model_validate(fields)


def _comparison(a: RunRow, b: RunRow, comparison: Comparison) -> models.Comparison:
    changes = [
        models.RequestChange(
            **asdict(change), delta=change.delta, changed=change.changed
        )
        for change in comparison.changes
    ]
    return models.Comparison(
        run_a=_run(a),
        run_b=_run(b),
        summary=models.ComparisonSummary.model_validate(comparison.summary()),
        changes=changes,
        only_in_a=comparison.only_a,
        only_in_b=comparison.only_b,
    )
