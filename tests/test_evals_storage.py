"""Evaluation runs and results are append-only in the database: a redelivered
job stores nothing twice, and UPDATE and DELETE are refused on both dialects."""

from __future__ import annotations

import pytest

from sluicegate.core.db.database import Database, driver_errors
from sluicegate.core.evals.bound import EvaluatorSpec
from sluicegate.core.evals.runs import (
    ResultValues,
    add_result,
    live_run,
    run_results,
)
from sluicegate.core.workspaces import create_workspace

pytestmark = pytest.mark.anyio


class FakeBound:
    """The identity of an evaluator, as runs.py reads it."""

    name = "pii"
    version = "1.0"
    config_hash = "a" * 64
    config_json = "{}"
    spec = EvaluatorSpec(name="pii")


async def stored_result(database: Database) -> int:
    workspace = await create_workspace(database, "acme")
    run_id = await live_run(database, workspace.id, FakeBound())  # type: ignore[arg-type]
    values = ResultValues(0.9, ("pii:card",), "pii:card x1", None)
    await add_result(database, run_id, "req_1", workspace.id, values)
    return run_id


async def test_a_live_run_is_shared_by_its_evaluator_version_and_config(
    database: Database,
) -> None:
    run_id = await stored_result(database)
    workspace_id = (await database.fetch("SELECT id FROM workspace"))[0]["id"]
    assert await live_run(database, workspace_id, FakeBound()) == run_id  # type: ignore[arg-type]


async def test_a_result_delivered_twice_is_stored_once(database: Database) -> None:
    run_id = await stored_result(database)
    workspace_id = (await database.fetch("SELECT id FROM workspace"))[0]["id"]
    again = ResultValues(0.1, (), None, None)
    await add_result(database, run_id, "req_1", workspace_id, again)
    results = await run_results(database, run_id)
    assert [(r.score, r.labels) for r in results.values()] == [(0.9, ("pii:card",))]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE evaluation_result SET score = 0",
        "DELETE FROM evaluation_result",
        "UPDATE evaluation_run SET version = '9'",
        "DELETE FROM evaluation_run",
    ],
)
async def test_the_database_refuses_to_change_results(
    database: Database, statement: str
) -> None:
    await stored_result(database)
    with pytest.raises(driver_errors(), match="never changed"):
        await database.fetch(statement)
    rows = await database.fetch("SELECT score FROM evaluation_result")
    assert [row["score"] for row in rows] == [0.9]
