"""The response never waits for evaluators: a plugin evaluator that holds on
until the test releases it is still running when the response arrives."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
)
from tests.test_evals_gateway import pipeline, results, wait_until
from tests.test_plugins import broken_distribution, install

SLOW_EVALUATOR = """
import asyncio
from pathlib import Path

from sluicegate.core import hookimpl
from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Verdict


class HeldConfig(EvaluatorConfig):
    markers: str


class Held(Evaluator):
    name = "held"
    version = "1"
    Config = HeldConfig

    async def evaluate(self, sample):
        markers = Path(self.config.markers)
        (markers / "started").touch()
        while not (markers / "release").exists():
            await asyncio.sleep(0.05)
        (markers / "finished").touch()
        return Verdict(0.25, ("held",))


@hookimpl
def sluicegate_evaluators():
    return [Held]
"""


@pytest.fixture(scope="module")
def held_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("held-source")
    source = broken_distribution(root, "sluicegate_held", SLOW_EVALUATOR)
    site = tmp_path_factory.mktemp("held-site")
    install([source], site, tmp_path_factory.mktemp("held-scratch"))
    return site


def test_the_response_arrives_while_the_evaluator_is_still_running(
    tmp_path: Path, database_url: str, upstream: FakeUpstream, held_site: Path
) -> None:
    keys = provision(database_url, ["acme"])
    markers = tmp_path / "markers"
    markers.mkdir()
    evaluators = [{"name": "held", "markers": str(markers), "timeout_seconds": 120}]
    gateway = GatewayProcess(
        tmp_path,
        database_url,
        gateway_config(upstream),
        {"default": pipeline(evaluators, audit=False)},
        env={"PYTHONPATH": str(held_site)},
    ).start()
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=keys["acme"])
    try:
        completion = client.chat.completions.create(
            model=PUBLIC_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        finished_when_answered = (markers / "finished").exists()
        started = wait_until(lambda: (markers / "started").exists(), lambda seen: seen)
        still_running = not (markers / "finished").exists()
        (markers / "release").touch()
        found = wait_until(lambda: results(database_url), lambda rows: bool(rows))
    finally:
        client.close()
        gateway.stop()

    assert completion.choices[0].message.content
    assert not finished_when_answered
    assert started and still_running
    assert [row["score"] for row in found] == [0.25]
