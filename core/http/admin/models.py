"""The admin API's request and response bodies (and its OpenAPI schemas).

Every body the admin API reads or writes is one of these pydantic models; the
OpenAPI document is generated from them, so it cannot drift from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.core.keys import NAME_MAX_LENGTH as KEY_NAME_MAX_LENGTH
from sluicegate.core.workspaces import NAME_MAX_LENGTH, NAME_PATTERN


class Body(BaseModel):
    """What a client sends (a body or a query): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error: the OpenAI error shape the proxy uses too."""

    error: ErrorDetail


class Workspace(BaseModel):
    id: int
    name: str
    created_at: datetime


class WorkspaceList(BaseModel):
    data: list[Workspace]


class WorkspaceCreate(Body):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)


class ApiKey(BaseModel):
    """An API key as listed: never its secret."""

    id: int
    workspace: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyList(BaseModel):
    data: list[ApiKey]


class ApiKeyCreate(Body):
    name: str | None = Field(default=None, max_length=KEY_NAME_MAX_LENGTH)


class ApiKeyCreated(ApiKey):
    key: str
    """The whole key: shown in this response only, never again."""
    note: str


class Pipeline(BaseModel):
    """A workspace's pipeline as the gateway runs it, validated."""

    workspace: str
    source: str
    stages: list[dict[str, Any]]


class PipelineCheck(Body):
    """A pipeline file's text (YAML, or JSON, which is YAML too)."""

    yaml: str = Field(max_length=1_000_000)


class PipelineProblem(BaseModel):
    where: str
    path: str
    got: str
    allowed: str


class PipelineCheckResult(BaseModel):
    valid: bool
    stages: list[str]
    problems: list[PipelineProblem]


class UsageQuery(Body):
    since: datetime | None = None
    """Start (inclusive); default: the beginning of the ledger."""
    until: datetime | None = None
    """End (exclusive); default: now."""


class ModelUsage(BaseModel):
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int


class Usage(BaseModel):
    """Usage and spend from the ledger; cost in millionths of a US dollar."""

    workspace: str
    since: datetime
    until: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int
    models: list[ModelUsage]


# -- spend -----------------------------------------------------------------------

MAX_ID = 2**63 - 1
"""The largest id or sequence number the databases store."""


class SpendQuery(Body):
    by: Literal["model", "key", "day"] = "model"
    """Group rows by model, API key prefix or UTC day."""
    window: Literal["day", "month", "all"] = "month"
    """The current UTC day, the current UTC month, or the whole ledger."""
    key: str | None = Field(default=None, max_length=64)
    """Only this API key (its prefix)."""


class SpendRow(BaseModel):
    workspace: str
    group: str
    """The model, the API key prefix (``-`` for none) or the UTC day."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    cost_usd: str
    """The cost as an exact decimal number of US dollars."""


class Spend(BaseModel):
    """Spend from the usage ledger, as ``sluicegate spend --json`` prints it."""

    workspace: str
    by: str
    window: str
    data: list[SpendRow]


# -- audit -----------------------------------------------------------------------


class AuditFault(BaseModel):
    seq: int | None
    request_id: str | None
    record_id: int | None
    problem: str


class AuditVerification(BaseModel):
    """One workspace's chain checked; ``fault`` names the first bad record."""

    workspace_id: int
    workspace: str
    ok: bool
    records: int
    payloads: int
    head_seq: int
    head_hash: str
    checkpoint_seq: int
    fault: AuditFault | None


class AuditExportQuery(Body):
    from_seq: int | None = Field(default=None, ge=1, le=MAX_ID)
    """First sequence number (inclusive)."""
    to_seq: int | None = Field(default=None, ge=1, le=MAX_ID)
    """Last sequence number (inclusive)."""


class AuditRecordLine(BaseModel):
    """One line of an export: the record exactly as chained, plus its hash."""

    model_config = ConfigDict(extra="allow")

    workspace_id: int
    seq: int
    request_id: str
    prev_hash: str
    hash: str


# -- retention -------------------------------------------------------------------

MAX_DAYS = 36_500


class RetentionPolicy(BaseModel):
    """The retention that applies; ``source``: where it comes from."""

    workspace: str
    payload_days: int | None
    record_days: int | None
    source: Literal["table", "pipeline", "none"]


class RetentionSet(Body):
    """Days to keep; leave one out (or null) to keep that for ever."""

    payload_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    record_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)


class RetentionCleared(RetentionPolicy):
    """The policy that applies once the stored one is gone."""

    removed: bool
    """Whether there was a stored policy to remove."""


# -- evaluations -----------------------------------------------------------------


class EvaluationRunsQuery(Body):
    evaluator: str | None = Field(default=None, max_length=64)
    """Only this evaluator's runs."""


class EvaluationRun(BaseModel):
    id: int
    evaluator: str
    version: str
    config_hash: str
    config: dict[str, Any]
    kind: str
    workspace: str | None
    """None: a re-run over every workspace."""
    selection: dict[str, Any]
    created_at: datetime
    results: int
    errors: int


class EvaluationRunList(BaseModel):
    data: list[EvaluationRun]


class CompareQuery(Body):
    run_a: int = Field(ge=1, le=MAX_ID)
    run_b: int = Field(ge=1, le=MAX_ID)


class RequestChange(BaseModel):
    request_id: str
    score_a: float | None
    score_b: float | None
    labels_added: list[str]
    labels_removed: list[str]
    error_a: str | None
    error_b: str | None
    delta: float | None
    changed: bool


class ComparisonSummary(BaseModel):
    compared: int
    only_in_a: int
    only_in_b: int
    changed: int
    increased: int
    decreased: int
    mean_score_a: float | None
    mean_score_b: float | None
    mean_delta: float | None
    errors_a: int
    errors_b: int
    labels_added: dict[str, int]
    labels_removed: dict[str, int]


class Comparison(BaseModel):
    """Run A against run B, as ``sluicegate evals compare --json`` prints it."""

    run_a: EvaluationRun
    run_b: EvaluationRun
    summary: ComparisonSummary
    changes: list[RequestChange]
    only_in_a: list[str]
    only_in_b: list[str]


class EvaluationResult(BaseModel):
    run_id: int
    evaluator: str
    version: str
    config_hash: str
    kind: str
    score: float | None
    labels: list[str]
    detail: str | None
    error: str | None
    created_at: datetime


class RiskComponent(BaseModel):
    evaluator: str
    weight: float
    score: float | None
    """None when the evaluator failed."""


class RiskScore(BaseModel):
    score: float
    components: list[RiskComponent]
    created_at: datetime


class RequestEvaluations(BaseModel):
    """Every evaluator verdict on one request, and its risk score if made."""

    workspace: str
    request_id: str
    risk: RiskScore | None
    results: list[EvaluationResult]
