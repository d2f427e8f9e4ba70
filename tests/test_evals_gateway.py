"""Safety evaluation end to end: a real gateway, a real Redis broker and a
real ``sluicegate worker`` process, driven by the official openai SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import yaml

from sluicegate.core.db.database import Database
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.databases import run_async
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    UPSTREAM_KEY,
    GatewayProcess,
    free_port,
    gateway_config,
    provision,
    sluicegate_executable,
)

CARD_ANSWER = "Your card 4111 1111 1111 1111 is on file; mail ada@example.com."
WAIT_SECONDS = 30.0
T = TypeVar("T")


def pipeline(evaluators: list[dict[str, Any]], audit: bool = True) -> dict[str, Any]:
    stages: list[dict[str, Any]] = [{"type": "audit", "payloads": "store"}]
    stages = stages if audit else []
    stages += [
        {"type": "auth"},
        {"type": "route", "retries": 0},
        {"type": "eval_enqueue", "evaluators": evaluators},
    ]
    return {"stages": stages}


def query(database_url: str, sql: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        database = await Database.connect(database_url)
        try:
            return await database.fetch(sql)
        finally:
            await database.close()

    return run_async(read)


def results(database_url: str) -> list[dict[str, Any]]:
    return query(
        database_url,
        "SELECT res.*, r.evaluator, r.kind FROM evaluation_result res "
        "JOIN evaluation_run r ON r.id = res.run_id ORDER BY res.id",
    )


def wait_until(read: Callable[[], T], done: Callable[[T], bool]) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def ask(gateway: GatewayProcess, key: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key)
    try:
        return client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "my card?"}]
        )
    finally:
        client.close()


class Worker:
    """A ``sluicegate worker`` process with the gateway's environment."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.log_path = gateway.workdir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {
            **os.environ,
            "SLUICEGATE_DATABASE_URL": self.gateway.database_url,
            "SLUICEGATE_CONFIG": str(self.gateway.workdir / "sluicegate.yaml"),
            "SLUICEGATE_PIPELINES_DIR": str(self.gateway.workdir / "pipelines"),
            "SLUICEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
            **self.gateway.env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sluicegate_executable(), "worker"],
                cwd=self.gateway.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def redis_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "SLUICEGATE_REDIS_URL": redis_url,
        "SLUICEGATE_REDIS_PREFIX": redis_prefix,
        "SLUICEGATE_EVAL_REQUEUE_SECONDS": "0.3",
    }


@pytest.fixture
def keys(database_url: str) -> dict[str, str]:
    return provision(database_url, ["acme"])


def start(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    evaluators: list[dict[str, Any]],
    env: dict[str, str],
) -> GatewayProcess:
    return GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": pipeline(evaluators)},
        env=env,
    ).start()


@pytest.fixture
def worker_of() -> Iterator[Callable[[GatewayProcess], Worker]]:
    workers: list[Worker] = []

    def make(gateway: GatewayProcess) -> Worker:
        workers.append(Worker(gateway).start())
        return workers[-1]

    yield make
    for worker in workers:
        worker.stop()


def test_a_card_number_in_an_answer_is_flagged_after_the_worker_runs(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    keys: dict[str, str],
    redis_env: dict[str, str],
    worker_of: Callable[[GatewayProcess], Worker],
) -> None:
    upstream.content = CARD_ANSWER
    gateway = start(tmp_path, database_url, upstream, [{"name": "pii"}], redis_env)
    try:
        completion = ask(gateway, keys["acme"])
        worker = worker_of(gateway)
        found = wait_until(lambda: results(database_url), lambda rows: bool(rows))
    finally:
        gateway.stop()

    assert found, worker.log()
    [result] = found
    assert json.loads(result["labels"]) == ["pii:card", "pii:email"]
    assert result["score"] == 0.9
    assert result["request_id"] == completion._request_id
    [risk] = query(database_url, "SELECT * FROM evaluation_risk")
    assert risk["score"] == pytest.approx(0.9)
    assert risk["request_id"] == result["request_id"]


def test_a_rerun_with_a_changed_config_is_a_new_run_that_leaves_the_first(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    keys: dict[str, str],
    redis_env: dict[str, str],
    worker_of: Callable[[GatewayProcess], Worker],
) -> None:
    upstream.content = CARD_ANSWER
    gateway = start(tmp_path, database_url, upstream, [{"name": "pii"}], redis_env)
    try:
        ask(gateway, keys["acme"])
        worker_of(gateway)
        first = wait_until(lambda: results(database_url), lambda rows: bool(rows))
        calls_before = upstream.calls
        narrowed = pipeline([{"name": "pii", "kinds": ["email"]}])
        (tmp_path / "pipelines" / "default.yaml").write_text(yaml.safe_dump(narrowed))
        rerun = cli(gateway, "evals", "rerun", "--evaluator", "pii", "--json")
    finally:
        gateway.stop()

    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["requests"] == 1 and report["errors"] == 0
    assert upstream.calls == calls_before == 1
    after = results(database_url)
    assert after[0] == first[0]
    assert [row["kind"] for row in after] == ["live", "rerun"]
    assert json.loads(after[1]["labels"]) == ["pii:email"]

    text = cli(gateway, "evals", "compare", str(first[0]["run_id"]), "2")
    assert text.returncode == 0, text.stderr
    assert "labels removed: pii:card x1" in text.stdout
    compared = cli(
        gateway,
        "evals",
        "compare",
        str(first[0]["run_id"]),
        str(report["run_id"]),
        "--json",
    )
    assert compared.returncode == 0, compared.stderr
    diff = json.loads(compared.stdout)
    [change] = diff["changes"]
    assert change["labels_removed"] == ["pii:card"]
    assert change["labels_added"] == []
    assert change["delta"] == pytest.approx(-0.4)
    assert diff["summary"]["decreased"] == 1
    assert diff["summary"]["labels_removed"] == {"pii:card": 1}


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SLUICEGATE_DATABASE_URL": gateway.database_url,
        "SLUICEGATE_CONFIG": str(gateway.workdir / "sluicegate.yaml"),
        "SLUICEGATE_PIPELINES_DIR": str(gateway.workdir / "pipelines"),
        "SLUICEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    return subprocess.run(
        [sluicegate_executable(), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_the_judge_grades_through_the_gateway_and_a_malformed_verdict_is_an_error(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    keys: dict[str, str],
) -> None:
    judge = [{"name": "llm_judge", "model": PUBLIC_MODEL, "rubric_version": "7"}]
    gateway = start(tmp_path, database_url, upstream, judge, env={})
    try:
        upstream.script(
            [Reply(), Reply(content='```json\n{"score": 0.7, "labels": ["Rude"]}\n```')]
        )
        ask(gateway, keys["acme"])
        wait_until(lambda: results(database_url), lambda rows: len(rows) == 1)
        upstream.script([Reply(), Reply(content="It seems fine to me.")])
        ask(gateway, keys["acme"])
        found = wait_until(lambda: results(database_url), lambda rows: len(rows) == 2)
    finally:
        gateway.stop()

    graded, malformed = found
    assert (graded["score"], json.loads(graded["labels"])) == (0.7, ["judge:rude"])
    assert malformed["score"] is None
    assert "MalformedVerdict: no JSON object" in malformed["error"]
    judge_call = upstream.requests[1].json
    assert judge_call["model"] == "upstream-model"
    assert judge_call["messages"][0]["role"] == "system"
    assert upstream.calls == 4


def test_queue_unreachable_defers_the_job_to_the_database_until_it_returns(
    tmp_path: Path,
    database_url: str,
    upstream: FakeUpstream,
    keys: dict[str, str],
    redis_prefix: str,
    worker_of: Callable[[GatewayProcess], Worker],
) -> None:
    port = free_port()
    env = {
        "SLUICEGATE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SLUICEGATE_REDIS_PREFIX": redis_prefix,
        "SLUICEGATE_EVAL_REQUEUE_SECONDS": "0.3",
    }
    upstream.content = CARD_ANSWER
    gateway = start(tmp_path, database_url, upstream, [{"name": "pii"}], env)
    redis_server: subprocess.Popen[bytes] | None = None
    try:
        completion = ask(gateway, keys["acme"])
        deferred = wait_until(
            lambda: query(database_url, "SELECT * FROM evaluation_deferred"),
            lambda rows: bool(rows),
        )
        redis_server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        worker = worker_of(gateway)
        found = wait_until(lambda: results(database_url), lambda rows: bool(rows))
        left = query(database_url, "SELECT * FROM evaluation_deferred")
    finally:
        gateway.stop()
        if redis_server is not None:
            redis_server.kill()
            redis_server.wait()

    assert completion.choices[0].message.content == CARD_ANSWER
    assert len(deferred) == 1
    assert found, worker.log()
    assert json.loads(found[0]["labels"]) == ["pii:card", "pii:email"]
    assert left == []
