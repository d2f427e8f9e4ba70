"""Workspaces are isolated from each other through the proxy and the CLI.

Through the proxy, an API key of workspace A never spends B's rate limits
(whatever their scope, even a client IP or a model both share) or budgets,
never reaches a model only B may use, lists only A's models, cannot pass
itself off as B by header or body, and its requests' audit records,
usage rows and evaluations are stored under A only.

Through the CLI, every command that takes ``--workspace`` shows or changes
that workspace's data only, even when it is handed another workspace's key,
subject or data.  The commands that take an id but no workspace act for the
operator over every workspace; a coverage test keeps both lists in step
with the parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import io
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from sluicegate.core.cli import build_parser
from sluicegate.core.db.database import Database
from sluicegate.core.settings import Settings
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.databases import (
    create_postgres_database,
    drop_postgres_database,
    run_async,
)
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    UPSTREAM_KEY,
    GatewayProcess,
    gateway_config,
    provision,
)

HI = [{"role": "user", "content": "hi"}]
"""Estimated at 10 prompt tokens; the fake upstream reports 10 + 5 used."""
ALLOWED = 3
"""Requests each workspace's limit or budget admits."""
LIMIT_SCOPES = ("workspace", "api_key", "ip", "model")
BUDGET_SCOPES = ("workspace", "api_key")
WAIT_SECONDS = 20.0


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        database = await Database.connect(database_url)
        try:
            return await database.fetch(sql, *args)
        finally:
            await database.close()

    return run_async(read)


def wait_for(read: Callable[[], list[dict[str, Any]]], count: int) -> Any:
    """``read()`` once it returns at least ``count`` rows (or the deadline)."""
    deadline = time.monotonic() + WAIT_SECONDS
    rows = read()
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = read()
    return rows


def workspace_id(database_url: str, name: str) -> int:
    [row] = query(database_url, "SELECT id FROM workspace WHERE name = {}", name)
    return int(row["id"])


def chat(
    base_url: str,
    key: str,
    model: str = PUBLIC_MODEL,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": model, "messages": HI, **fields},
        headers={"authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


# -- the proxy ---------------------------------------------------------------------


def limited(scope: str) -> dict[str, Any]:
    limit = {"scope": scope, "requests": ALLOWED, "per": "hour"}
    return {
        "stages": [
            {"type": "auth"},
            {"type": "rate_limit", "limits": [limit]},
            {"type": "route", "retries": 0},
        ]
    }


def budgeted(scope: str) -> dict[str, Any]:
    limit = {"scope": scope, "tokens": ALLOWED * 15, "per": "day"}
    return {
        "stages": [
            {"type": "auth"},
            {"type": "budget", "limits": [limit]},
            {"type": "route", "retries": 0},
        ]
    }


def own_models(model: str, *later: dict[str, Any]) -> dict[str, Any]:
    return {
        "stages": [
            {"type": "audit", "payloads": "store"},
            {"type": "auth", "models": [model]},
            {"type": "route", "retries": 0},
            *later,
        ]
    }


PII = {"type": "eval_enqueue", "evaluators": [{"name": "pii"}]}


PROXY_PIPELINES: dict[str, dict[str, Any]] = {
    "acme": own_models(PUBLIC_MODEL),
    "globex": own_models("other-model"),
    **{f"limit-{s}-{w}": limited(s) for s in LIMIT_SCOPES for w in "ab"},
    **{f"budget-{s}-{w}": budgeted(s) for s in BUDGET_SCOPES for w in "ab"},
}


@dataclass
class Proxy:
    process: GatewayProcess
    upstream: FakeUpstream
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.base_url

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return query(self.process.database_url, sql, *args)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Proxy]:
    """One gateway on Redis and SQLite; each test uses workspaces of its own."""
    workdir = tmp_path_factory.mktemp("tenant-proxy")
    database_url = f"sqlite:///{workdir / 'gateway.db'}"
    keys = provision(database_url, sorted(PROXY_PIPELINES))
    prefix = f"sgtest-{secrets.token_hex(6)}"
    env = {
        "SLUICEGATE_REDIS_URL": redis_url,
        "SLUICEGATE_REDIS_PREFIX": prefix,
        "SLUICEGATE_REDIS_TIMEOUT_SECONDS": "2",
    }
    with FakeUpstream(expected_key=UPSTREAM_KEY) as upstream:
        config = gateway_config(upstream)
        with GatewayProcess(
            workdir, database_url, config, PROXY_PIPELINES, env=env
        ) as process:
            yield Proxy(process, upstream, keys)
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    finally:
        client.close()


def statuses(proxy: Proxy, workspace: str, count: int, **extra: Any) -> list[int]:
    key = proxy.keys[workspace]
    return [chat(proxy.url, key, **extra).status_code for _ in range(count)]


@pytest.mark.redis
@pytest.mark.parametrize("scope", LIMIT_SCOPES)
def test_one_workspace_using_up_a_rate_limit_leaves_another_its_whole_limit(
    proxy: Proxy, scope: str
) -> None:
    # Both workspaces call from the same IP, for the same model.
    first = statuses(proxy, f"limit-{scope}-a", ALLOWED + 1)
    second = statuses(proxy, f"limit-{scope}-b", ALLOWED + 1)

    assert first == [200] * ALLOWED + [429]
    assert second == [200] * ALLOWED + [429]


@pytest.mark.redis
@pytest.mark.parametrize("scope", BUDGET_SCOPES)
def test_one_workspace_using_up_a_budget_leaves_another_its_whole_budget(
    proxy: Proxy, scope: str
) -> None:
    first = statuses(proxy, f"budget-{scope}-a", ALLOWED + 1, max_tokens=5)
    second = statuses(proxy, f"budget-{scope}-b", ALLOWED + 1, max_tokens=5)
    ledger = wait_for(
        lambda: proxy.rows(
            "SELECT w.name FROM usage u JOIN workspace w ON w.id = u.workspace_id "
            "WHERE w.name LIKE {} ORDER BY w.name",
            f"budget-{scope}-%",
        ),
        2 * ALLOWED,
    )

    assert first == [200] * ALLOWED + [402]
    assert second == [200] * ALLOWED + [402]
    assert [row["name"] for row in ledger] == [f"budget-{scope}-a"] * ALLOWED + [
        f"budget-{scope}-b"
    ] * ALLOWED


@pytest.mark.redis
def test_a_model_only_another_workspace_may_use_is_refused_without_naming_it(
    proxy: Proxy,
) -> None:
    calls = proxy.upstream.calls
    response = chat(proxy.url, proxy.keys["acme"], model="other-model")

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (403, "model_not_allowed")
    assert "globex" not in error["message"]
    assert proxy.upstream.calls == calls


@pytest.mark.redis
def test_models_lists_only_the_workspace_s_own_models(proxy: Proxy) -> None:
    listed = {}
    for workspace in ("acme", "globex"):
        with openai.OpenAI(
            base_url=f"{proxy.url}/v1", api_key=proxy.keys[workspace], max_retries=0
        ) as sdk:
            listed[workspace] = [model.id for model in sdk.models.list()]

    assert listed == {"acme": [PUBLIC_MODEL], "globex": ["other-model"]}


@pytest.mark.redis
def test_a_client_cannot_pass_itself_off_as_another_workspace(proxy: Proxy) -> None:
    posing = {
        "x-sluicegate-workspace": "globex",
        "openai-organization": "globex",
        "openai-project": "globex",
        "x-workspace": "globex",
    }
    response = chat(proxy.url, proxy.keys["acme"], workspace="globex", headers=posing)
    request_id = response.headers["x-request-id"]
    stored = wait_for(
        lambda: proxy.rows(
            "SELECT w.name FROM audit_record r JOIN workspace w "
            "ON w.id = r.workspace_id WHERE r.request_id = {}",
            request_id,
        ),
        1,
    )

    assert response.status_code == 200
    assert stored == [{"name": "acme"}]


# -- the CLI -------------------------------------------------------------------------

SUBJECT = "alice"
"""An end user both workspaces know by the same id."""

CLI_PIPELINES: dict[str, dict[str, Any]] = {
    "default": {
        "stages": [
            {"type": "audit", "payloads": "store"},
            {"type": "auth"},
            {
                "type": "budget",
                "limits": [{"scope": "workspace", "tokens": 10**9, "per": "day"}],
            },
            {"type": "route", "retries": 0},
            PII,
        ]
    },
    "globex": own_models("other-model", PII),
}


@dataclass
class Data:
    """Two workspaces' records, payloads, usage and evaluations, and the CLI."""

    process: GatewayProcess
    keys: dict[str, str]
    settings: Settings

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return query(self.settings.database_url, sql, *args)

    def reader(self, sql: str) -> Callable[[], list[dict[str, Any]]]:
        return lambda: self.rows(sql)

    def id_of(self, workspace: str) -> int:
        return workspace_id(self.settings.database_url, workspace)

    def cli(self, *argv: str) -> tuple[int, str]:
        """Run a ``sluicegate`` command in-process: its exit status and output
        (what it printed on stdout, then on stderr)."""
        args = build_parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if inspect.iscoroutinefunction(args.handler):
                status = asyncio.run(args.handler(args, self.settings))
            else:
                status = args.handler(args, self.settings)
        return int(status), out.getvalue() + err.getvalue()

    def cli_json(self, *argv: str) -> Any:
        status, out = self.cli(*argv, "--json")
        assert status == 0, out
        return json.loads(out)

    def chain_length(self, workspace: str) -> int:
        return len(
            self.rows(
                "SELECT id FROM audit_record WHERE workspace_id = {}",
                self.id_of(workspace),
            )
        )


def _database(kind: str, workdir: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'gateway.db'}"
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin_url)
    request.addfinalizer(lambda: drop_postgres_database(admin_url, url))
    return url


WRITTEN = {"audit_record": 4, "audit_payload": 4, "usage": 2, "evaluation_result": 4}
"""What the after steps of the four requests write (only acme has a budget)."""


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def data(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Data]:
    """A gateway without Redis (evaluations run in it) whose two workspaces
    served two requests each: one of ``SUBJECT``, one of bob's."""
    workdir = tmp_path_factory.mktemp("tenant-cli")
    database_url = _database(request.param, workdir, request)
    keys = provision(database_url, ["acme", "globex"])
    with FakeUpstream(expected_key=UPSTREAM_KEY) as upstream:
        upstream.content = "Mail me at ada@example.com."
        process = GatewayProcess(
            workdir, database_url, gateway_config(upstream), CLI_PIPELINES
        )
        settings = Settings(
            database_url=database_url,
            config=workdir / "sluicegate.yaml",
            pipelines_dir=workdir / "pipelines",
        )
        with process:
            for workspace, model in (("acme", PUBLIC_MODEL), ("globex", "other-model")):
                for user in (SUBJECT, "bob"):
                    response = chat(process.base_url, keys[workspace], model, user=user)
                    assert response.status_code == 200
            served = Data(process, keys, settings)
            for table, count in WRITTEN.items():
                written = wait_for(served.reader(f"SELECT id FROM {table}"), count)
                assert len(written) == count, table
            yield served


def test_a_request_s_record_usage_and_evaluations_are_stored_under_its_workspace(
    data: Data,
) -> None:
    response = chat(data.process.base_url, data.keys["acme"], user="ada")
    request_id = response.headers["x-request-id"]

    def owners(table: str) -> Callable[[], list[dict[str, Any]]]:
        return lambda: data.rows(
            f"SELECT workspace_id FROM {table} WHERE request_id = {{}}", request_id
        )

    stored = {
        table: wait_for(owners(table), 1)
        for table in ("audit_record", "audit_payload", "usage", "evaluation_result")
    }
    runs = data.rows(
        "SELECT DISTINCT run.workspace_id FROM evaluation_run run "
        "JOIN evaluation_result res ON res.run_id = run.id "
        "WHERE res.request_id = {}",
        request_id,
    )

    acme = [{"workspace_id": data.id_of("acme")}]
    assert response.status_code == 200
    assert stored == dict.fromkeys(stored, acme)
    assert runs == acme


def test_key_list_of_a_workspace_shows_only_its_keys(data: Data) -> None:
    listed = data.cli_json("key", "list", "--workspace", "acme")

    assert [key["workspace"] for key in listed] == ["acme"]


def test_a_key_created_for_a_workspace_works_in_that_workspace_only(
    data: Data,
) -> None:
    created = data.cli_json("key", "create", "--workspace", "globex")
    models = httpx.get(
        f"{data.process.base_url}/v1/models",
        headers={"authorization": f"Bearer {created['key']}"},
        timeout=30,
    )

    assert [model["id"] for model in models.json()["data"]] == ["other-model"]


def test_audit_export_of_a_workspace_holds_only_its_records(data: Data) -> None:
    status, out = data.cli("audit", "export", "--workspace", "acme")
    exported = [json.loads(line) for line in out.splitlines()]

    assert status == 0
    assert {record["workspace_id"] for record in exported} == {data.id_of("acme")}
    assert len(exported) == data.chain_length("acme")


def test_audit_verify_of_a_workspace_reports_only_its_chain(data: Data) -> None:
    reports = data.cli_json("audit", "verify", "--workspace", "acme")

    assert [(r["workspace"], r["records"], r["ok"]) for r in reports] == [
        ("acme", data.chain_length("acme"), True)
    ]


def test_spend_of_a_workspace_with_another_workspace_s_key_is_empty(
    data: Data,
) -> None:
    globex_prefix = data.keys["globex"].split("-")[1]
    crossed = data.cli_json(
        "spend", "--workspace", "acme", "--key", globex_prefix, "--by", "key"
    )
    own = data.cli_json("spend", "--workspace", "acme", "--by", "key")

    ledger = data.rows(
        "SELECT id FROM usage WHERE workspace_id = {}", data.id_of("acme")
    )
    assert crossed == []
    assert [(row["workspace"], row["requests"]) for row in own] == [
        ("acme", len(ledger))
    ]


def test_evals_list_of_a_workspace_shows_only_its_runs(data: Data) -> None:
    runs = data.cli_json("evals", "list", "--workspace", "acme")

    assert runs and {run["workspace"] for run in runs} == {"acme"}


def test_evals_rerun_of_a_workspace_judges_only_its_requests(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command builds the configured providers, which read their keys.
    monkeypatch.setenv("SLUICEGATE_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    report = data.cli_json(
        "evals", "rerun", "--evaluator", "pii", "--workspace", "acme"
    )
    judged = data.rows(
        "SELECT DISTINCT workspace_id FROM evaluation_result WHERE run_id = {}",
        report["run_id"],
    )
    payloads = data.rows(
        "SELECT id FROM audit_payload WHERE workspace_id = {}", data.id_of("acme")
    )

    assert judged == [{"workspace_id": data.id_of("acme")}]
    assert report["requests"] == len(payloads)


def test_erasing_a_subject_in_one_workspace_leaves_it_in_another(data: Data) -> None:
    def subject_payloads(workspace: str) -> int:
        return len(
            data.rows(
                "SELECT id FROM audit_payload WHERE workspace_id = {} AND subject = {}",
                data.id_of(workspace),
                SUBJECT,
            )
        )

    globex_chain = data.chain_length("globex")
    erased = data.cli_json("erase", "--workspace", "acme", "--subject", SUBJECT)

    assert erased["workspace"] == "acme"
    assert subject_payloads("acme") == 0
    assert subject_payloads("globex") == 1
    assert data.chain_length("globex") == globex_chain


def test_retention_commands_of_one_workspace_leave_another_s_policy_and_chain(
    data: Data,
) -> None:
    globex_policy = data.cli_json("retention", "show", "--workspace", "globex")
    globex_chain = data.chain_length("globex")

    set_status, _ = data.cli(
        "retention", "set", "--workspace", "acme", "--payload-days", "1"
    )
    ran = data.cli_json("retention", "run", "--workspace", "acme")
    clear_status, _ = data.cli("retention", "clear", "--workspace", "acme")

    assert (set_status, clear_status) == (0, 0)
    assert {result["workspace"] for result in ran} <= {"acme"}
    assert data.cli_json("retention", "show", "--workspace", "globex") == (
        globex_policy
    )
    assert data.chain_length("globex") == globex_chain


# -- which CLI commands are covered -----------------------------------------------

WORKSPACE_COMMANDS = {
    "admin-token create": "tests/test_admin_api.py (scoped tokens get 404)",
    "audit export": "test_audit_export_of_a_workspace_holds_only_its_records",
    "audit verify": "test_audit_verify_of_a_workspace_reports_only_its_chain",
    "erase": "test_erasing_a_subject_in_one_workspace_leaves_it_in_another",
    "evals list": "test_evals_list_of_a_workspace_shows_only_its_runs",
    "evals rerun": "test_evals_rerun_of_a_workspace_judges_only_its_requests",
    "key create": "test_a_key_created_for_a_workspace_works_in_that_workspace_only",
    "key list": "test_key_list_of_a_workspace_shows_only_its_keys",
    "retention clear": "test_retention_commands_of_one_workspace_leave_...",
    "retention run": "test_retention_commands_of_one_workspace_leave_...",
    "retention set": "test_retention_commands_of_one_workspace_leave_...",
    "retention show": "test_retention_commands_of_one_workspace_leave_...",
    "spend": "test_spend_of_a_workspace_with_another_workspace_s_key_is_empty",
}
"""Every command taking ``--workspace``, and the test that proves it keeps
to that workspace."""

OPERATOR_COMMANDS = {
    "key revoke": "takes a key id or prefix, unique over every workspace",
    "evals compare": "takes two run ids, of any workspace or of none",
}
"""Commands taking an id but no workspace: the operator's, over every
workspace (the CLI holds the database's credentials; a workspace's own
tooling uses a scoped admin token, tested in tests/test_admin_api.py)."""

ID_ARGUMENTS = {"key", "run_a", "run_b", "subject"}


def leaf_commands(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, set[str]]]:
    """Every runnable command's name and the destinations of its arguments."""
    subparsers = [
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    if not subparsers:
        yield path.strip(), {action.dest for action in parser._actions}
        return
    for name, child in subparsers[0].choices.items():
        yield from leaf_commands(child, f"{path} {name}")


def test_every_cli_command_taking_a_workspace_or_an_id_is_covered() -> None:
    commands = dict(leaf_commands(build_parser()))
    with_workspace = {name for name, dests in commands.items() if "workspace" in dests}
    ids_only = {
        name
        for name, dests in commands.items()
        if dests & ID_ARGUMENTS and "workspace" not in dests
    }

    assert with_workspace == set(WORKSPACE_COMMANDS)
    assert ids_only == set(OPERATOR_COMMANDS)
