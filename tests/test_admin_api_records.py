"""The admin API over what the gateway recorded: spend, the audit chain and its
export, retention policies, evaluation runs and a request's evaluations; and
that a workspace-scoped token reaches none of another workspace's records.

A real gateway with an audit stage serves requests from the official openai
SDK; ledger rows and evaluation results are written to the real database with
the functions the worker uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from sluicegate.core.db.database import Database
from sluicegate.core.evals.risk import Component
from sluicegate.core.evals.runs import ResultValues, add_result, add_risk
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.databases import run_async
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)
from tests.test_admin_api import OPERATOR, Admin, create_scoped_token

PIPELINE = {
    "stages": [
        {"type": "audit", "payloads": "hash", "retention": {"payload_days": 30}},
        {"type": "auth"},
        {"type": "route", "retries": 0},
    ]
}
WAIT_SECONDS = 20.0


@dataclass
class Recorded:
    """The gateway, and the request ids it served for each workspace."""

    admin: Admin
    requests: dict[str, list[str]]

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.admin.call(method, path, **kwargs)

    def scoped(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.admin.call(method, path, token=self.admin.scoped, **kwargs)


@pytest.fixture
def recorded(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> Iterator[Recorded]:
    keys = provision(database_url, ["acme", "globex"])
    scoped = create_scoped_token(database_url, "acme")
    process = GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": PIPELINE},
        env={"SLUICEGATE_ADMIN_TOKEN": OPERATOR},
    )
    with process:
        requests = {
            "acme": [ask(process, keys["acme"]), ask(process, keys["acme"])],
            "globex": [ask(process, keys["globex"])],
        }
        wait_for_records(database_url, 3)
        yield Recorded(Admin(process, keys, scoped), requests)


def ask(process: GatewayProcess, key: str) -> str:
    client = openai.OpenAI(
        base_url=f"{process.base_url}/v1", api_key=key, max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    request_id: str = raw.headers["x-request-id"]
    return request_id


def database_call(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def call() -> list[dict[str, Any]]:
        database = await Database.connect(database_url)
        try:
            return await database.fetch(sql, *args)
        finally:
            await database.close()

    return run_async(call)


def wait_for_records(database_url: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    sql = "SELECT count(*) AS n FROM audit_record"
    while database_call(database_url, sql)[0]["n"] < count:
        assert time.monotonic() < deadline, "the audit records were not written"
        time.sleep(0.1)


def workspace_id(database_url: str, name: str) -> int:
    rows = database_call(database_url, "SELECT id FROM workspace WHERE name = {}", name)
    return int(rows[0]["id"])


def new_run(database_url: str, workspace: str | None, evaluator: str) -> int:
    """A re-run row, as ``sluicegate evals rerun`` starts one."""
    owner = None if workspace is None else workspace_id(database_url, workspace)
    rows = database_call(
        database_url,
        "INSERT INTO evaluation_run (evaluator, version, config_hash, config, "
        "kind, workspace_id, selection, created_at) "
        "VALUES ({}, '1', {}, {}, 'rerun', {}, {}, {}) RETURNING id",
        evaluator,
        "0" * 64,
        "{}",
        owner,
        "{}",
        datetime.now(UTC),
    )
    return int(rows[0]["id"])


def judge(
    database_url: str, run_id: int, workspace: str, request_id: str, score: float
) -> None:
    """Store one verdict of ``run_id`` on a request, as the worker does."""
    labels = ("pii",) if score > 0.5 else ()
    values = ResultValues(score=score, labels=labels, detail=None, error=None)
    owner = workspace_id(database_url, workspace)

    async def write() -> None:
        database = await Database.connect(database_url)
        try:
            await add_result(database, run_id, request_id, owner, values)
        finally:
            await database.close()

    run_async(write)


def assess(database_url: str, workspace: str, request_id: str, score: float) -> None:
    """Store a request's risk score, as the worker does."""
    owner = workspace_id(database_url, workspace)
    parts = [Component(evaluator="safety", weight=1.0, score=score)]

    async def write() -> None:
        database = await Database.connect(database_url)
        try:
            await add_risk(database, request_id, owner, score, parts)
        finally:
            await database.close()

    run_async(write)


def ledger_row(database_url: str, workspace: str, request_id: str) -> None:
    database_call(
        database_url,
        "INSERT INTO usage (request_id, workspace_id, model, status, "
        "prompt_tokens, completion_tokens, cached_tokens, cost_micros, created_at) "
        "VALUES ({}, {}, {}, 200, 10, 5, 0, 1500, {})",
        request_id,
        workspace_id(database_url, workspace),
        PUBLIC_MODEL,
        datetime.now(UTC),
    )


# -- spend -------------------------------------------------------------------------


def test_spend_sums_the_workspace_ledger_by_model(recorded: Recorded) -> None:
    url = recorded.admin.process.database_url
    for workspace, request_ids in recorded.requests.items():
        for request_id in request_ids:
            ledger_row(url, workspace, request_id)

    response = recorded.call("GET", "/workspaces/acme/spend", params={"by": "model"})

    assert response.status_code == 200
    assert response.json()["data"] == [
        {
            "workspace": "acme",
            "group": PUBLIC_MODEL,
            "requests": 2,
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "cost_micros": 3000,
            "cost_usd": "0.003",
        }
    ]


def test_spend_refuses_an_unknown_grouping_with_400(recorded: Recorded) -> None:
    response = recorded.call("GET", "/workspaces/acme/spend", params={"by": "user"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "by"


# -- audit -------------------------------------------------------------------------


def test_audit_verify_reports_an_intact_chain(recorded: Recorded) -> None:
    response = recorded.call("GET", "/workspaces/acme/audit/verify")

    body = response.json()
    assert response.status_code == 200
    assert (body["ok"], body["records"], body["head_seq"], body["fault"]) == (
        True,
        2,
        2,
        None,
    )


def test_audit_export_streams_the_chained_records_as_json_lines(
    recorded: Recorded,
) -> None:
    response = recorded.call("GET", "/workspaces/acme/audit/export")
    later = recorded.call(
        "GET", "/workspaces/acme/audit/export", params={"from_seq": 2}
    )

    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [line["request_id"] for line in lines] == recorded.requests["acme"]
    assert [line["seq"] for line in lines] == [1, 2]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    assert [json.loads(line)["seq"] for line in later.text.splitlines()] == [2]


def test_an_export_past_the_chain_head_is_empty(recorded: Recorded) -> None:
    response = recorded.call(
        "GET", "/workspaces/acme/audit/export", params={"from_seq": 2**63 - 1}
    )

    assert (response.status_code, response.text) == (200, "")


# -- retention ---------------------------------------------------------------------


def test_retention_reads_the_pipeline_policy_by_default(recorded: Recorded) -> None:
    response = recorded.call("GET", "/workspaces/acme/retention")

    assert response.json() == {
        "workspace": "acme",
        "payload_days": 30,
        "record_days": None,
        "source": "pipeline",
    }


def test_a_stored_retention_policy_overrides_the_pipeline(
    recorded: Recorded,
) -> None:
    stored = recorded.call(
        "PUT", "/workspaces/acme/retention", json={"record_days": 400}
    )
    applying = recorded.call("GET", "/workspaces/acme/retention")

    assert stored.status_code == 200
    assert applying.json() == {
        "workspace": "acme",
        "payload_days": None,
        "record_days": 400,
        "source": "table",
    }


def test_clearing_retention_restores_the_pipeline_policy(recorded: Recorded) -> None:
    recorded.call("PUT", "/workspaces/acme/retention", json={"payload_days": 7})
    cleared = recorded.call("DELETE", "/workspaces/acme/retention")
    again = recorded.call("DELETE", "/workspaces/acme/retention")

    assert cleared.json() == {
        "workspace": "acme",
        "payload_days": 30,
        "record_days": None,
        "source": "pipeline",
        "removed": True,
    }
    assert again.json()["removed"] is False


def test_retention_of_zero_days_is_refused_with_400(recorded: Recorded) -> None:
    response = recorded.call(
        "PUT", "/workspaces/acme/retention", json={"payload_days": 0}
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "payload_days"


# -- evaluations -------------------------------------------------------------------


def test_evaluation_runs_lists_only_the_workspace_runs(recorded: Recorded) -> None:
    url = recorded.admin.process.database_url
    first = new_run(url, "acme", "safety")
    second = new_run(url, "acme", "judge")
    new_run(url, "globex", "safety")
    judge(url, first, "acme", recorded.requests["acme"][0], 0.25)

    listed = recorded.call("GET", "/workspaces/acme/evals/runs").json()["data"]
    safety = recorded.call(
        "GET", "/workspaces/acme/evals/runs", params={"evaluator": "safety"}
    )

    assert [(run["id"], run["results"]) for run in listed] == [(second, 0), (first, 1)]
    assert [run["id"] for run in safety.json()["data"]] == [first]


def test_comparing_runs_shows_each_request_change(recorded: Recorded) -> None:
    url = recorded.admin.process.database_url
    one, two = recorded.requests["acme"]
    run_a, run_b = new_run(url, "acme", "safety"), new_run(url, "acme", "safety")
    judge(url, run_a, "acme", one, 0.25)
    judge(url, run_a, "acme", two, 0.5)
    judge(url, run_b, "acme", one, 0.75)

    response = recorded.scoped(
        "GET", "/evals/compare", params={"run_a": run_a, "run_b": run_b}
    )

    body = response.json()
    assert response.status_code == 200
    assert [
        (c["request_id"], c["delta"], c["labels_added"]) for c in body["changes"]
    ] == [(one, 0.5, ["pii"])]
    assert (body["only_in_a"], body["only_in_b"]) == ([two], [])
    assert body["summary"]["increased"] == 1


def test_a_request_evaluations_show_every_verdict_and_the_risk(
    recorded: Recorded,
) -> None:
    url = recorded.admin.process.database_url
    request_id = recorded.requests["acme"][0]
    run_id = new_run(url, "acme", "safety")
    judge(url, run_id, "acme", request_id, 0.75)
    assess(url, "acme", request_id, 0.75)

    response = recorded.call(
        "GET", f"/workspaces/acme/requests/{request_id}/evaluations"
    )

    body = response.json()
    assert response.status_code == 200
    assert [(r["run_id"], r["score"], r["labels"]) for r in body["results"]] == [
        (run_id, 0.75, ["pii"])
    ]
    assert body["risk"]["score"] == 0.75
    assert body["risk"]["components"] == [
        {"evaluator": "safety", "weight": 1.0, "score": 0.75}
    ]


def test_a_request_without_evaluations_gets_404(recorded: Recorded) -> None:
    request_id = recorded.requests["acme"][0]

    response = recorded.call(
        "GET", f"/workspaces/acme/requests/{request_id}/evaluations"
    )

    assert response.status_code == 404


# -- workspace-scoped tokens -------------------------------------------------------


def test_a_scoped_token_gets_404_for_another_workspace_request(
    recorded: Recorded,
) -> None:
    url = recorded.admin.process.database_url
    theirs = recorded.requests["globex"][0]
    judge(url, new_run(url, "globex", "safety"), "globex", theirs, 0.75)
    assess(url, "globex", theirs, 0.75)

    via_own = recorded.scoped("GET", f"/workspaces/acme/requests/{theirs}/evaluations")
    via_theirs = recorded.scoped(
        "GET", f"/workspaces/globex/requests/{theirs}/evaluations"
    )

    assert (via_own.status_code, via_theirs.status_code) == (404, 404)
    assert "0.75" not in via_own.text + via_theirs.text


def test_a_scoped_token_gets_404_for_another_run(recorded: Recorded) -> None:
    url = recorded.admin.process.database_url
    mine = new_run(url, "acme", "safety")
    theirs = new_run(url, "globex", "safety")
    everyone = new_run(url, None, "safety")

    answers = [
        recorded.scoped("GET", "/evals/compare", params={"run_a": a, "run_b": b})
        for a, b in ((mine, theirs), (theirs, mine), (mine, everyone))
    ]
    missing = recorded.call(
        "GET", "/evals/compare", params={"run_a": mine, "run_b": everyone + 1}
    )

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert missing.status_code == 404
    assert (
        recorded.call(
            "GET", "/evals/compare", params={"run_a": mine, "run_b": everyone}
        ).status_code
        == 200
    )
