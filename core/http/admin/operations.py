"""The admin API's operations: one table, read by the router and the OpenAPI
document alike.

Each handler calls the same functions as the CLI (:mod:`sluicegate.core.workspaces`,
:mod:`sluicegate.core.keys`, :mod:`sluicegate.core.pipeline`,
:mod:`sluicegate.core.usage_report`; spend, audit, retention and evaluations
in their own modules here) and returns a model of :mod:`.models`, or JSON
Lines (:class:`.call.Lines`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.http.admin import audit, evals, models, retention, spend
from sluicegate.core.http.admin.access import forbidden, not_found
from sluicegate.core.http.admin.call import NDJSON, Call, Operation, visible_workspace
from sluicegate.core.keys import KeyRow, create_key, list_keys, revoke_key
from sluicegate.core.observability.scrub import scrub_value
from sluicegate.core.pipeline import parse_pipeline
from sluicegate.core.usage_report import EPOCH, usage_summary
from sluicegate.core.workspaces import (
    WorkspaceRow,
    create_workspace,
    list_workspaces,
)

SHOWN_ONCE = "This key is shown only in this response: store it now."


# -- workspaces ------------------------------------------------------------------


async def list_workspaces_op(call: Call) -> models.WorkspaceList:
    rows = await list_workspaces(call.gateway.services.database)
    visible = [row for row in rows if call.scope.sees(row.name)]
    return models.WorkspaceList(data=[_workspace(row) for row in visible])


async def create_workspace_op(call: Call) -> models.Workspace:
    if not call.scope.is_operator:
        raise forbidden("a workspace-scoped admin token cannot create workspaces")
    name = call.body.name
    return _workspace(await create_workspace(call.gateway.services.database, name))


async def get_workspace_op(call: Call, workspace: str) -> models.Workspace:
    return _workspace(await visible_workspace(call, workspace))


def _workspace(row: WorkspaceRow) -> models.Workspace:
    return models.Workspace(id=row.id, name=row.name, created_at=row.created_at)


# -- API keys --------------------------------------------------------------------


async def list_keys_op(call: Call, workspace: str) -> models.ApiKeyList:
    row = await visible_workspace(call, workspace)
    keys = await list_keys(call.gateway.services.database, row.name)
    return models.ApiKeyList(data=[_key(key) for key in keys])


async def create_key_op(call: Call, workspace: str) -> models.ApiKeyCreated:
    row = await visible_workspace(call, workspace)
    database = call.gateway.services.database
    key, secret = await create_key(database, row.name, call.body.name)
    return models.ApiKeyCreated(**_key(key).model_dump(), key=secret, note=SHOWN_ONCE)


async def revoke_key_op(call: Call, workspace: str, key: str) -> models.ApiKey:
    row = await visible_workspace(call, workspace)
    database = call.gateway.services.database
    keys = await list_keys(database, row.name)
    found = next((k for k in keys if key in (str(k.id), k.prefix)), None)
    if found is None:
        raise not_found(
            f"workspace {row.name!r} has no API key {key!r} (give its id or prefix)"
        )
    revoked = await revoke_key(database, str(found.id))
    call.gateway.services.keys.clear()
    return _key(revoked)


def _key(row: KeyRow) -> models.ApiKey:
    return models.ApiKey(
        id=row.id,
        workspace=row.workspace,
        prefix=row.prefix,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


# -- pipelines -------------------------------------------------------------------


async def get_pipeline_op(call: Call, workspace: str) -> models.Pipeline:
    row = await visible_workspace(call, workspace)
    spec = call.gateway.pipelines.get(row.name).spec
    stages = [config.model_dump(mode="json") for _, config in spec.stages]
    source = spec.source.rsplit("/", 1)[-1]
    return models.Pipeline(
        workspace=row.name, source=source, stages=scrub_value(stages)
    )


async def check_pipeline_op(call: Call) -> models.PipelineCheckResult:
    stage_types = call.gateway.services.registry.stage_types
    try:
        raw = yaml.safe_load(call.body.yaml)
        spec = parse_pipeline(raw, stage_types, source="request body")
    except yaml.YAMLError as exc:
        problem = Problem("request body", "", f"invalid YAML: {exc}", "YAML or JSON")
        return _invalid([problem])
    except ConfigError as exc:
        return _invalid(exc.problems)
    stages = [config.id or config.type for _, config in spec.stages]
    return models.PipelineCheckResult(valid=True, stages=stages, problems=[])


def _invalid(problems: list[Problem]) -> models.PipelineCheckResult:
    found = [models.PipelineProblem(**vars(problem)) for problem in problems]
    return models.PipelineCheckResult(valid=False, stages=[], problems=found)


# -- usage -----------------------------------------------------------------------


async def usage_op(call: Call, workspace: str) -> models.Usage:
    row = await visible_workspace(call, workspace)
    since = _aware(call.query.since) or EPOCH
    until = _aware(call.query.until) or datetime.now(UTC)
    summary = await usage_summary(call.gateway.services.database, row.id, since, until)
    return models.Usage(
        workspace=row.name,
        since=since,
        until=until,
        requests=summary.total("requests"),
        prompt_tokens=summary.total("prompt_tokens"),
        completion_tokens=summary.total("completion_tokens"),
        cached_tokens=summary.total("cached_tokens"),
        cost_micros=summary.total("cost_micros"),
        models=[models.ModelUsage(**vars(model)) for model in summary.models],
    )


def _aware(when: datetime | None) -> datetime | None:
    """Naive times are taken as UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


WORKSPACE = "/workspaces/{workspace}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/workspaces", list_workspaces_op, "List workspaces",
              models.WorkspaceList),
    Operation("POST", "/workspaces", create_workspace_op, "Create a workspace",
              models.Workspace, status=201, body=models.WorkspaceCreate),
    Operation("GET", WORKSPACE, get_workspace_op, "Get a workspace",
              models.Workspace),
    Operation("GET", f"{WORKSPACE}/keys", list_keys_op,
              "List a workspace's API keys (never their secrets)", models.ApiKeyList),
    Operation("POST", f"{WORKSPACE}/keys", create_key_op,
              "Create an API key; the response shows it, once",
              models.ApiKeyCreated, status=201, body=models.ApiKeyCreate),
    Operation("POST", f"{WORKSPACE}/keys/{{key}}/revoke", revoke_key_op,
              "Revoke an API key (by id or prefix)", models.ApiKey),
    Operation("GET", f"{WORKSPACE}/pipeline", get_pipeline_op,
              "The workspace's pipeline as the gateway runs it", models.Pipeline),
    Operation("POST", "/pipelines/check", check_pipeline_op,
              "Validate a pipeline file without installing it",
              models.PipelineCheckResult, body=models.PipelineCheck),
    Operation("GET", f"{WORKSPACE}/usage", usage_op,
              "Usage and spend from the ledger over a time range", models.Usage,
              query=models.UsageQuery),
    Operation("GET", f"{WORKSPACE}/spend", spend.spend_op,
              "Spend in the current UTC day or month, by model, key or day",
              models.Spend, query=models.SpendQuery),
    Operation("GET", f"{WORKSPACE}/audit/verify", audit.verify_audit_op,
              "Verify the workspace's audit chain", models.AuditVerification),
    Operation("GET", f"{WORKSPACE}/audit/export", audit.export_audit_op,
              "Export audit records as JSON Lines, one record per line",
              models.AuditRecordLine, query=models.AuditExportQuery,
              media_type=NDJSON),
    Operation("GET", f"{WORKSPACE}/retention", retention.get_retention_op,
              "The audit retention policy that applies", models.RetentionPolicy),
    Operation("PUT", f"{WORKSPACE}/retention", retention.set_retention_op,
              "Store the workspace's retention policy (overrides its pipeline's)",
              models.RetentionPolicy, body=models.RetentionSet),
    Operation("DELETE", f"{WORKSPACE}/retention", retention.clear_retention_op,
              "Remove the stored policy; the pipeline's applies again",
              models.RetentionCleared),
    Operation("GET", f"{WORKSPACE}/evals/runs", evals.list_runs_op,
              "The workspace's evaluation runs, newest first",
              models.EvaluationRunList, query=models.EvaluationRunsQuery),
    Operation("GET", "/evals/compare", evals.compare_runs_op,
              "Compare two evaluation runs request by request", models.Comparison,
              query=models.CompareQuery),
    Operation("GET", f"{WORKSPACE}/requests/{{request_id}}/evaluations",
              evals.request_evaluations_op,
              "Every evaluation of one request and its risk score",
              models.RequestEvaluations),
)  # fmt: skip
