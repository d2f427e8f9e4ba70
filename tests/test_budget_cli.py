"""``sluicegate spend`` reads the usage ledger, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

import anyio

from sluicegate.core.budgets import ledger
from sluicegate.core.budgets.ledger import Entry
from sluicegate.core.context import Usage
from sluicegate.core.db.database import Database
from tests.fixtures.gateway import provision, sluicegate_executable


async def _charge(database_url: str, rows: list[tuple[str, str, int]]) -> None:
    database = await Database.connect(database_url)
    try:
        workspace = (await database.fetch("SELECT id FROM workspace"))[0]["id"]
        for request_id, model, cost in rows:
            await ledger.record(
                database,
                Entry(
                    request_id=request_id,
                    workspace_id=workspace,
                    key_id=None,
                    model=model,
                    target=f"p/{model}",
                    status=200,
                    usage=Usage(10, 5, 0),
                    cost_micros=cost,
                    admitted_at=datetime.now(UTC),
                ),
            )
    finally:
        await database.close()


def spend(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLUICEGATE_DATABASE_URL": database_url}
    return subprocess.run(
        [sluicegate_executable(), "spend", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_spend_sums_the_ledger_per_model(database_url: str) -> None:
    provision(database_url, ["acme"])
    rows = [("a", "m1", 1_500_000), ("b", "m1", 250_000), ("c", "m2", 1)]
    anyio.run(_charge, database_url, rows)
    result = spend(database_url, "--by", "model", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "workspace": "acme",
            "group": "m1",
            "requests": 2,
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "cost_micros": 1_750_000,
            "cost_usd": "1.75",
        },
        {
            "workspace": "acme",
            "group": "m2",
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_micros": 1,
            "cost_usd": "0.000001",
        },
    ]


def test_spend_of_another_workspace_is_empty(database_url: str) -> None:
    provision(database_url, ["acme", "globex"])
    anyio.run(_charge, database_url, [("a", "m1", 5)])
    result = spend(database_url, "--workspace", "globex", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_spend_groups_by_day(database_url: str) -> None:
    provision(database_url, ["acme"])
    anyio.run(_charge, database_url, [("a", "m1", 5), ("b", "m2", 7)])
    result = spend(database_url, "--by", "day", "--window", "all", "--json")
    [row] = json.loads(result.stdout)
    assert (row["group"], row["cost_micros"]) == (
        datetime.now(UTC).strftime("%Y-%m-%d"),
        12,
    )
