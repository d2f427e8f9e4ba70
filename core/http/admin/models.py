"""The admin API's request and response bodies (and its OpenAPI schemas).

Every body the admin API reads or writes is one of these pydantic models; the
OpenAPI document is generated from them, so it cannot drift from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.core.keys import NAME_MAX_LENGTH as KEY_NAME_MAX_LENGTH
from sluicegate.core.workspaces import NAME_MAX_LENGTH, NAME_PATTERN


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
