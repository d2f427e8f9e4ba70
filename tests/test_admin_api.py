"""The admin API: workspaces, keys, pipelines, usage; tokens and their scope.

Spend, audit, retention and evaluations: ``test_admin_api_records.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest

from sluicegate.core.db.database import Database
from sluicegate.core.http.admin.operations import OPERATIONS
from sluicegate.core.http.app import create_app
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    DEFAULT_PIPELINE,
    GatewayProcess,
    gateway_config,
    provision,
    sluicegate_executable,
)

OPERATOR = "operator-token-for-tests-0123456789"
ADMIN = "/admin/v1"


@dataclass
class Admin:
    process: GatewayProcess
    keys: dict[str, str]
    scoped: str
    """An admin token scoped to workspace ``acme``."""

    def call(
        self, method: str, path: str, token: str = OPERATOR, **kwargs: object
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"}
        url = f"{self.process.base_url}{ADMIN}{path}"
        return httpx.request(method, url, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def create_scoped_token(database_url: str, workspace: str) -> str:
    """``sluicegate admin-token create --workspace W --json`` (the real CLI)."""
    result = subprocess.run(
        [sluicegate_executable(), "admin-token", "create", "--workspace", workspace,
         "--json"],
        env={**os.environ, "SLUICEGATE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    token: str = json.loads(result.stdout)["token"]
    return token


@pytest.fixture
def admin(tmp_path: Path, database_url: str, upstream: FakeUpstream) -> Iterator[Admin]:
    keys = provision(database_url, ["acme", "globex"])
    scoped = create_scoped_token(database_url, "acme")
    process = GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": DEFAULT_PIPELINE},
        env={"SLUICEGATE_ADMIN_TOKEN": OPERATOR},
    )
    with process:
        yield Admin(process, keys, scoped)


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["data"]]


# -- access ------------------------------------------------------------------------


def test_the_admin_api_is_off_without_an_operator_token(gateway: object) -> None:
    base = gateway.base_url  # type: ignore[attr-defined]
    response = httpx.get(f"{base}{ADMIN}/workspaces", timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_request_without_a_token_gets_401(admin: Admin) -> None:
    url = f"{admin.process.base_url}{ADMIN}/workspaces"
    response = httpx.get(url, timeout=10)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"


def test_a_wrong_token_gets_401(admin: Admin) -> None:
    assert admin.call("GET", "/workspaces", token="nope").status_code == 401


def test_an_api_key_is_no_admin_token(admin: Admin) -> None:
    response = admin.call("GET", "/workspaces", token=admin.keys["acme"])

    assert response.status_code == 401


# -- workspaces --------------------------------------------------------------------


def test_the_operator_lists_every_workspace(admin: Admin) -> None:
    assert names(admin.call("GET", "/workspaces")) == ["acme", "globex"]


def test_a_created_workspace_is_listed(admin: Admin) -> None:
    created = admin.call("POST", "/workspaces", json={"name": "initech"})

    assert created.status_code == 201
    assert created.json()["name"] == "initech"
    assert names(admin.call("GET", "/workspaces")) == ["acme", "globex", "initech"]


def test_a_taken_workspace_name_is_refused_with_400(admin: Admin) -> None:
    response = admin.call("POST", "/workspaces", json={"name": "acme"})

    assert response.status_code == 400
    assert "exists" in response.json()["error"]["message"]


def test_an_invalid_workspace_name_is_refused_with_400(admin: Admin) -> None:
    response = admin.call("POST", "/workspaces", json={"name": "Not Valid"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"


# -- keys --------------------------------------------------------------------------


def test_a_created_key_is_shown_once_and_works(admin: Admin) -> None:
    created = admin.call("POST", "/workspaces/acme/keys", json={"name": "ci"})
    secret = created.json()["key"]
    listed = admin.call("GET", "/workspaces/acme/keys").json()["data"]
    models = httpx.get(
        f"{admin.process.base_url}/v1/models",
        headers={"authorization": f"Bearer {secret}"},
        timeout=10,
    )

    assert created.status_code == 201
    assert secret.startswith("sg-" + created.json()["prefix"])
    assert secret not in json.dumps(listed)
    assert [key["name"] for key in listed] == ["test", "ci"]
    assert models.status_code == 200


def test_a_revoked_key_is_refused_at_once(admin: Admin) -> None:
    prefix = admin.keys["acme"].split("-")[1]
    revoked = admin.call("POST", f"/workspaces/acme/keys/{prefix}/revoke")
    models = httpx.get(
        f"{admin.process.base_url}/v1/models",
        headers={"authorization": f"Bearer {admin.keys['acme']}"},
        timeout=10,
    )

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert models.status_code == 401


# -- pipelines ---------------------------------------------------------------------


def test_a_workspace_pipeline_is_served_validated(admin: Admin) -> None:
    response = admin.call("GET", "/workspaces/acme/pipeline")

    assert response.status_code == 200
    assert [stage["type"] for stage in response.json()["stages"]] == ["auth", "route"]
    assert response.json()["source"] == "default.yaml"


def test_a_valid_pipeline_checks_valid(admin: Admin) -> None:
    text = "stages:\n  - type: auth\n  - type: route\n"
    response = admin.call("POST", "/pipelines/check", json={"yaml": text})

    assert response.json() == {
        "valid": True,
        "stages": ["auth", "route"],
        "problems": [],
    }


def test_an_invalid_pipeline_lists_its_problems(admin: Admin) -> None:
    text = '{"stages": [{"type": "auth"}, {"type": "nope"}]}'
    response = admin.call("POST", "/pipelines/check", json={"yaml": text})

    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert [p["path"] for p in response.json()["problems"]] == ["stages.1.type"]


# -- usage -------------------------------------------------------------------------


async def _ledger_rows(database_url: str) -> None:
    database = await Database.connect(database_url)
    try:
        rows = await database.fetch("SELECT id FROM workspace WHERE name = 'acme'")
        for number, model in enumerate(["a-model", "a-model", "b-model"]):
            await database.fetch(
                "INSERT INTO usage (request_id, workspace_id, model, status, "
                "prompt_tokens, completion_tokens, cached_tokens, cost_micros, "
                "created_at) VALUES ({}, {}, {}, 200, 10, 5, 0, 1500, {})",
                f"req_{number}",
                rows[0]["id"],
                model,
                "2026-12-01 10:00:00.000+00:00"
                if database.is_sqlite
                else datetime(2026, 12, 1, 10, tzinfo=UTC),
            )
    finally:
        await database.close()


def test_usage_sums_the_ledger_per_model(admin: Admin) -> None:
    anyio.run(_ledger_rows, admin.process.database_url)
    response = admin.call("GET", "/workspaces/acme/usage")
    later = admin.call(
        "GET", "/workspaces/acme/usage", params={"since": "2026-12-02T00:00:00Z"}
    )

    body = response.json()
    assert (body["requests"], body["prompt_tokens"], body["cost_micros"]) == (
        3,
        30,
        4500,
    )
    assert [(m["model"], m["requests"]) for m in body["models"]] == [
        ("a-model", 2),
        ("b-model", 1),
    ]
    assert later.json()["requests"] == 0


def test_a_bad_usage_time_is_refused_with_400(admin: Admin) -> None:
    response = admin.call("GET", "/workspaces/acme/usage", params={"since": "soon"})

    assert response.status_code == 400


# -- workspace-scoped tokens -------------------------------------------------------


def test_a_scoped_token_lists_only_its_workspace(admin: Admin) -> None:
    assert names(admin.call("GET", "/workspaces", token=admin.scoped)) == ["acme"]


def test_a_scoped_token_reads_its_own_workspace(admin: Admin) -> None:
    response = admin.call("GET", "/workspaces/acme/keys", token=admin.scoped)

    assert response.status_code == 200


OTHER_WORKSPACE_ROUTES = [
    ("GET", "/workspaces/globex"),
    ("GET", "/workspaces/globex/keys"),
    ("POST", "/workspaces/globex/keys"),
    ("GET", "/workspaces/globex/pipeline"),
    ("GET", "/workspaces/globex/usage"),
    ("GET", "/workspaces/globex/spend"),
    ("GET", "/workspaces/globex/audit/verify"),
    ("GET", "/workspaces/globex/audit/export"),
    ("GET", "/workspaces/globex/retention"),
    ("PUT", "/workspaces/globex/retention"),
    ("DELETE", "/workspaces/globex/retention"),
    ("GET", "/workspaces/globex/evals/runs"),
    ("GET", "/workspaces/globex/requests/req_0/evaluations"),
]
ROUTES_WITH_OTHER_IDS = {
    (
        "POST",
        "/workspaces/{workspace}/keys/{key}/revoke",
    ): "test_a_scoped_token_cannot_revoke_another_workspace_key",
    (
        "GET",
        "/workspaces/{workspace}/requests/{request_id}/evaluations",
    ): "test_admin_api_records.py::"
    "test_a_scoped_token_gets_404_for_another_workspace_request",
    (
        "GET",
        "/evals/compare",
    ): "test_admin_api_records.py::test_a_scoped_token_gets_404_for_another_run",
}
"""Routes taking ids besides the workspace's name, and the test covering each."""
ID_QUERY_FIELDS = {"run_a", "run_b"}


@pytest.mark.parametrize(("method", "path"), OTHER_WORKSPACE_ROUTES)
def test_a_scoped_token_gets_404_for_another_workspace(
    admin: Admin, method: str, path: str
) -> None:
    response = admin.call(method, path, token=admin.scoped, json={})

    assert response.status_code == 404
    assert "globex" not in json.dumps(response.json()).replace("'globex'", "")


def test_every_id_taking_route_is_covered_by_the_scope_test() -> None:
    workspace_taking = {
        (op.method, op.path) for op in OPERATIONS if "{workspace}" in op.path
    }
    other_ids = {
        (op.method, op.path)
        for op in OPERATIONS
        if op.path.replace("{workspace}", "").count("{")
        or ID_QUERY_FIELDS & set(op.query.model_fields if op.query else ())
    }
    covered = {
        (method, path.replace("globex", "{workspace}").replace("req_0", "{request_id}"))
        for method, path in OTHER_WORKSPACE_ROUTES
    }

    assert workspace_taking - covered == {
        ("POST", "/workspaces/{workspace}/keys/{key}/revoke")
    }
    assert other_ids == set(ROUTES_WITH_OTHER_IDS)


def test_a_scoped_token_cannot_revoke_another_workspace_key(admin: Admin) -> None:
    prefix = admin.keys["globex"].split("-")[1]
    via_other = admin.call(
        "POST", f"/workspaces/globex/keys/{prefix}/revoke", token=admin.scoped
    )
    via_own = admin.call(
        "POST", f"/workspaces/acme/keys/{prefix}/revoke", token=admin.scoped
    )
    listed = admin.call("GET", "/workspaces/globex/keys").json()["data"]

    assert (via_other.status_code, via_own.status_code) == (404, 404)
    assert listed[0]["revoked_at"] is None


def test_a_scoped_token_cannot_create_workspaces(admin: Admin) -> None:
    response = admin.call(
        "POST", "/workspaces", token=admin.scoped, json={"name": "mine"}
    )

    assert response.status_code == 403


# -- the OpenAPI document ----------------------------------------------------------


def test_every_admin_route_is_in_the_openapi_document(admin: Admin) -> None:
    document = admin.call("GET", "/openapi.json").json()
    described = {
        (method.upper(), path.removeprefix(ADMIN))
        for path, item in document["paths"].items()
        for method in item
    }

    assert document["openapi"] == "3.1.0"
    assert described == {(op.method, op.path) for op in OPERATIONS}


def test_the_router_serves_exactly_the_documented_operations() -> None:
    served = {
        (method, rule.rule.removeprefix(ADMIN).replace("<", "{").replace(">", "}"))
        for rule in create_app().url_map.iter_rules()
        if rule.rule.startswith(ADMIN) and rule.rule != f"{ADMIN}/openapi.json"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }

    assert served == {(op.method, op.path) for op in OPERATIONS}
