"""Plugins: a third-party distribution's stage runs in a pipeline; loading is
limited by the allow-list and the autoload switch; errors name the plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pluggy
import pytest

from sluicegate.core import hookspecs
from sluicegate.core.errors import PluginError
from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.plugins import collect
from sluicegate.core.stage import Stage
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
    sluicegate_executable,
)

PLUGIN_SOURCE = Path(__file__).parent / "plugin_dist"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin distribution, really installed (with its entry point)."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "plugin_dist"
    shutil.copytree(PLUGIN_SOURCE, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sluicegate_executable(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def test_the_installed_plugin_is_listed_with_its_version(plugin_site: Path) -> None:
    result = cli("plugins", "--json", env={"PYTHONPATH": str(plugin_site)})
    plugins = {row["name"]: row for row in json.loads(result.stdout)}
    assert plugins["header_policy"]["version"] == "1.2.0"
    assert plugins["header_policy"]["adds"] == ["stage:header_policy"]
    assert plugins["sluicegate.stages"]["builtin"] is True


def test_the_allow_list_leaves_other_plugins_out(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "SLUICEGATE_PLUGINS": "someone_else"}
    result = cli("plugins", env=env)
    assert result.returncode == 2
    assert "someone_else" in result.stderr and "header_policy" in result.stderr


def test_autoload_off_loads_no_entry_point(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "SLUICEGATE_PLUGINS_AUTOLOAD": "false"}
    names = [
        row["name"] for row in json.loads(cli("plugins", "--json", env=env).stdout)
    ]
    assert "header_policy" not in names


def test_pipeline_check_knows_the_plugin_stage(
    plugin_site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages: [{type: header_policy, header: x-team}, {type: route}]")
    result = cli("pipeline", "check", str(path), env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 1
    assert "stages.0.allowed: got (missing)" in result.stdout


@pytest.fixture
def plugin_gateway(
    plugin_site: Path, tmp_path: Path, database_url: str
) -> Iterator[tuple[GatewayProcess, str]]:
    keys = provision(database_url, ["acme"])
    pipeline = {
        "stages": [
            {"type": "header_policy", "header": "X-Team", "allowed": ["search"]},
            {"type": "auth"},
            {"type": "route"},
        ]
    }
    with FakeUpstream() as upstream:
        process = GatewayProcess(
            tmp_path,
            database_url,
            gateway_config(upstream),
            {"default": pipeline},
            env={"PYTHONPATH": str(plugin_site)},
        )
        with process:
            yield process, keys["acme"]


def test_a_third_party_stage_runs_in_a_pipeline(
    plugin_gateway: tuple[GatewayProcess, str],
) -> None:
    process, key = plugin_gateway
    body = {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{process.base_url}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    denied = httpx.post(url, json=body, headers=headers, timeout=30)
    allowed = httpx.post(
        url, json=body, headers={**headers, "x-team": "search"}, timeout=30
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "header_policy_violation"
    assert allowed.status_code == 200


class TwoOfTheSameName:
    @hookimpl
    def sluicegate_stage_types(self) -> list[type[Stage]]:
        from sluicegate.stages.auth import AuthStage

        return [AuthStage]


class NotAList:
    @hookimpl
    def sluicegate_stage_types(self) -> object:
        return "auth"


def manager_with(*plugins: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for index, plugin in enumerate(plugins):
        manager.register(plugin, name=f"plugin{index}")
    return manager


def test_a_stage_type_registered_twice_names_both_plugins() -> None:
    manager = manager_with(TwoOfTheSameName(), TwoOfTheSameName())
    with pytest.raises(PluginError) as caught:
        collect(manager)
    assert "stage 'auth' is already registered by 'plugin" in str(caught.value)
    assert caught.value.hook == "sluicegate_stage_types"


def test_a_hook_returning_the_wrong_shape_names_the_plugin_and_hook() -> None:
    with pytest.raises(PluginError) as caught:
        collect(manager_with(NotAList()))
    assert str(caught.value) == (
        "plugin 'plugin0', hook 'sluicegate_stage_types': must return a list, "
        "returned str"
    )
