"""Evaluation runs, their results and risk scores in the database.

Rows are only ever inserted (the migration's triggers refuse UPDATE and
DELETE).  Inserting a result or a risk score that is already there (a job
delivered twice) does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from sluicegate.core.db.database import Database, storage_errors
from sluicegate.core.errors import InvalidRequest

if TYPE_CHECKING:
    from sluicegate.core.evals.bound import BoundEvaluator
    from sluicegate.core.evals.risk import Component

RUN_COLUMNS = (
    "r.id, r.evaluator, r.version, r.config_hash, r.config, r.kind, "
    "w.name AS workspace, r.selection, r.created_at"
)


@dataclass(frozen=True)
class ResultValues:
    """What a result row says: a score and labels, or an error."""

    score: float | None
    labels: tuple[str, ...]
    detail: str | None
    error: str | None


@dataclass(frozen=True)
class RunRow:
    id: int
    evaluator: str
    version: str
    config_hash: str
    config: dict[str, Any]
    kind: str
    workspace: str | None
    selection: dict[str, Any]
    created_at: datetime
    results: int = 0
    errors: int = 0


@dataclass(frozen=True)
class ResultRow:
    request_id: str
    score: float | None
    labels: tuple[str, ...]
    detail: str | None
    error: str | None


async def live_run(db: Database, workspace_id: int, bound: BoundEvaluator) -> int:
    """The live run of this workspace, evaluator version and configuration."""
    key = f"{workspace_id}:{bound.name}:{bound.version}:{bound.config_hash}"
    with storage_errors(f"finding the live evaluation run {key}"):
        rows = await db.fetch("SELECT id FROM evaluation_run WHERE live_key = {}", key)
        if rows:
            return int(rows[0]["id"])
        await db.fetch(
            "INSERT INTO evaluation_run (evaluator, version, config_hash, config, "
            "kind, workspace_id, selection, live_key, created_at) "
            "VALUES ({}, {}, {}, {}, 'live', {}, {}, {}, {}) "
            "ON CONFLICT (live_key) DO NOTHING",
            *_run_values(bound),
            workspace_id,
            _json({"kind": "live", "workspace_id": workspace_id}),
            key,
            datetime.now(UTC),
        )
        rows = await db.fetch("SELECT id FROM evaluation_run WHERE live_key = {}", key)
    return int(rows[0]["id"])


async def new_rerun(
    db: Database,
    bound: BoundEvaluator,
    workspace_id: int | None,
    selection: dict[str, Any],
) -> int:
    """A new run re-evaluating the stored requests ``selection`` describes."""
    with storage_errors(f"creating a re-run of evaluator {bound.name}"):
        rows = await db.fetch(
            "INSERT INTO evaluation_run (evaluator, version, config_hash, config, "
            "kind, workspace_id, selection, created_at) "
            "VALUES ({}, {}, {}, {}, 'rerun', {}, {}, {}) RETURNING id",
            *_run_values(bound),
            workspace_id,
            _json(selection),
            datetime.now(UTC),
        )
    return int(rows[0]["id"])


def _run_values(bound: BoundEvaluator) -> tuple[str, str, str, str]:
    return (bound.name, bound.version, bound.config_hash, bound.config_json)


async def add_result(
    db: Database,
    run_id: int,
    request_id: str,
    workspace_id: int,
    values: ResultValues,
) -> None:
    """Store one verdict (or error) of a run; a second one for it is ignored."""
    with storage_errors(f"storing the evaluation of request {request_id}"):
        await db.fetch(
            "INSERT INTO evaluation_result (run_id, request_id, workspace_id, "
            "score, labels, detail, error, created_at) "
            "VALUES ({}, {}, {}, {}, {}, {}, {}, {}) "
            "ON CONFLICT (run_id, request_id) DO NOTHING",
            run_id,
            request_id,
            workspace_id,
            values.score,
            _json(list(values.labels)),
            values.detail,
            values.error,
            datetime.now(UTC),
        )


async def add_risk(
    db: Database,
    request_id: str,
    workspace_id: int,
    score: float,
    components: list[Component],
) -> None:
    """Store a request's risk score with the parts it was made of."""
    parts = [
        {"evaluator": c.evaluator, "weight": c.weight, "score": c.score}
        for c in components
    ]
    with storage_errors(f"storing the risk score of request {request_id}"):
        await db.fetch(
            "INSERT INTO evaluation_risk (request_id, workspace_id, score, "
            "components, created_at) VALUES ({}, {}, {}, {}, {}) "
            "ON CONFLICT (request_id) DO NOTHING",
            request_id,
            workspace_id,
            score,
            _json(parts),
            datetime.now(UTC),
        )


async def risk_of(
    db: Database, request_id: str, *, workspace_id: int | None = None
) -> dict[str, Any] | None:
    """A request's risk score and its components (for the admin API).

    With ``workspace_id``, only if the request belongs to that workspace.
    """
    where, args = _of_request("request_id", "workspace_id", request_id, workspace_id)
    with storage_errors(f"reading the risk score of request {request_id}"):
        rows = await db.fetch(
            f"SELECT score, components, created_at FROM evaluation_risk WHERE {where}",
            *args,
        )
    if not rows:
        return None
    row = rows[0]
    return {
        "request_id": request_id,
        "score": float(row["score"]),
        "components": orjson.loads(row["components"]),
        "created_at": row["created_at"],
    }


async def request_results(
    db: Database, request_id: str, *, workspace_id: int | None = None
) -> list[dict[str, Any]]:
    """Every result about one request, oldest first, with its run's identity.

    With ``workspace_id``, only results about that workspace's request.
    """
    where, args = _of_request(
        "res.request_id", "res.workspace_id", request_id, workspace_id
    )
    with storage_errors(f"reading the evaluations of request {request_id}"):
        rows = await db.fetch(
            "SELECT res.run_id, r.evaluator, r.version, r.config_hash, r.kind, "
            "res.score, res.labels, res.detail, res.error, res.created_at "
            "FROM evaluation_result res JOIN evaluation_run r ON r.id = res.run_id "
            f"WHERE {where} ORDER BY res.id",
            *args,
        )
    return [{**row, "labels": orjson.loads(row["labels"])} for row in rows]


def _of_request(
    request_column: str,
    workspace_column: str,
    request_id: str,
    workspace_id: int | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause for one request, of one workspace if ``workspace_id``."""
    if workspace_id is None:
        return f"{request_column} = {{}}", [request_id]
    where = f"{request_column} = {{}} AND {workspace_column} = {{}}"
    return where, [request_id, workspace_id]


async def list_runs(
    db: Database, evaluator: str | None = None, workspace: str | None = None
) -> list[RunRow]:
    """Runs, newest first, with how many results and errors each holds."""
    conditions, args = ["1 = 1"], []
    if evaluator is not None:
        conditions.append("r.evaluator = {}")
        args.append(evaluator)
    if workspace is not None:
        conditions.append("w.name = {}")
        args.append(workspace)
    with storage_errors("listing evaluation runs"):
        rows = await db.fetch(
            f"SELECT {RUN_COLUMNS}, "
            "(SELECT count(*) FROM evaluation_result x WHERE x.run_id = r.id) "
            "AS results, "
            "(SELECT count(*) FROM evaluation_result x WHERE x.run_id = r.id "
            "AND x.error IS NOT NULL) AS errors "
            "FROM evaluation_run r LEFT JOIN workspace w ON w.id = r.workspace_id "
            f"WHERE {' AND '.join(conditions)} ORDER BY r.id DESC",
            *args,
        )
    return [_run_row(row) for row in rows]


async def get_run(db: Database, run_id: int) -> RunRow:
    """One run; InvalidRequest if there is none with that id."""
    with storage_errors(f"reading evaluation run {run_id}"):
        rows = await db.fetch(
            f"SELECT {RUN_COLUMNS} FROM evaluation_run r "
            "LEFT JOIN workspace w ON w.id = r.workspace_id WHERE r.id = {}",
            run_id,
        )
    if not rows:
        raise InvalidRequest(
            f"there is no evaluation run {run_id}; `sluicegate evals list` "
            "lists the runs"
        )
    return _run_row(rows[0])


async def run_results(db: Database, run_id: int) -> dict[str, ResultRow]:
    """A run's results by request id."""
    with storage_errors(f"reading the results of evaluation run {run_id}"):
        rows = await db.fetch(
            "SELECT request_id, score, labels, detail, error "
            "FROM evaluation_result WHERE run_id = {} ORDER BY id",
            run_id,
        )
    return {
        row["request_id"]: ResultRow(
            row["request_id"],
            None if row["score"] is None else float(row["score"]),
            tuple(orjson.loads(row["labels"])),
            row["detail"],
            row["error"],
        )
        for row in rows
    }


def _run_row(row: dict[str, Any]) -> RunRow:
    return RunRow(
        id=int(row["id"]),
        evaluator=row["evaluator"],
        version=row["version"],
        config_hash=row["config_hash"],
        config=orjson.loads(row["config"]),
        kind=row["kind"],
        workspace=row["workspace"],
        selection=orjson.loads(row["selection"]),
        created_at=row["created_at"],
        results=int(row.get("results") or 0),
        errors=int(row.get("errors") or 0),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
