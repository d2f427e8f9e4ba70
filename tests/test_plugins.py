"""Plugins: the example distributions' stage, provider kind and evaluator load
through entry points; loading is limited by the allow-list and the autoload
switch; a broken plugin stops the start with the plugin, hook and problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pluggy
import pytest

from sluicegate.core import hookspecs
from sluicegate.core.errors import PluginError
from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.plugins import collect
from sluicegate.core.stage import Stage
from tests.fakes.textgen import TextgenServer
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    GatewayProcess,
    gateway_config,
    provision,
    sluicegate_executable,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def install(sources: list[Path], target: Path, scratch: Path) -> None:
    """Really install distributions (entry points included) into ``target``."""
    scratch.mkdir(exist_ok=True)
    for source in sources:
        copy = scratch / source.name
        shutil.copytree(source, copy)
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
                str(copy),
            ],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three example plugins, installed as distributions."""
    target = tmp_path_factory.mktemp("site")
    sources = sorted(path for path in EXAMPLES.iterdir() if path.is_dir())
    install(sources, target, tmp_path_factory.mktemp("source"))
    return target


def broken_distribution(root: Path, name: str, module_source: str) -> Path:
    """A one-module plugin distribution whose module is ``module_source``."""
    source = root / name
    source.mkdir()
    (source / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['setuptools']\n"
        "build-backend = 'setuptools.build_meta'\n"
        f"[project]\nname = '{name}'\nversion = '0.1'\n"
        f"[project.entry-points.sluicegate]\n{name} = '{name}'\n"
        f"[tool.setuptools]\npy-modules = ['{name}']\n"
    )
    (source / f"{name}.py").write_text(module_source)
    return source


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sluicegate_executable(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def test_installed_plugins_are_listed_with_versions_and_what_they_add(
    plugin_site: Path,
) -> None:
    result = cli("plugins", "--json", env={"PYTHONPATH": str(plugin_site)})
    plugins = {row["name"]: row for row in json.loads(result.stdout)}
    assert plugins["header_policy"]["version"] == "1.2.0"
    assert plugins["header_policy"]["adds"] == ["stage:header_policy"]
    assert plugins["textgen"]["adds"] == ["provider:textgen"]
    assert plugins["regex_rubric"]["version"] == "2.0.0"
    assert plugins["regex_rubric"]["adds"] == ["evaluator:regex_rubric"]
    assert plugins["sluicegate.stages"]["builtin"] is True


def test_the_allow_list_names_a_plugin_that_is_not_installed(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "SLUICEGATE_PLUGINS": "someone_else"}
    result = cli("plugins", env=env)
    assert result.returncode == 2
    assert "someone_else" in result.stderr and "header_policy" in result.stderr


def test_the_allow_list_loads_only_the_named_plugins(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "SLUICEGATE_PLUGINS": "textgen"}
    rows = json.loads(cli("plugins", "--json", env=env).stdout)
    assert [row["name"] for row in rows if not row["builtin"]] == ["textgen"]


def test_autoload_off_loads_no_entry_point(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site), "SLUICEGATE_PLUGINS_AUTOLOAD": "false"}
    rows = json.loads(cli("plugins", "--json", env=env).stdout)
    assert [row["name"] for row in rows if not row["builtin"]] == []


def test_pipeline_check_knows_the_plugin_stage(
    plugin_site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages: [{type: header_policy, header: x-team}, {type: route}]")
    result = cli("pipeline", "check", str(path), env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 1
    assert "stages.0.allowed: got (missing)" in result.stdout


@pytest.mark.parametrize(
    ("module_source", "expected"),
    [
        (
            "import no_such_module_anywhere\n",
            "failed to import 'broken_plugin': ModuleNotFoundError",
        ),
        (
            "from sluicegate.core import hookimpl\n"
            "@hookimpl\ndef sluicegate_stage_typez():\n    return []\n",
            "unknown hook 'sluicegate_stage_typez'",
        ),
        (
            "from sluicegate.core import hookimpl\n"
            "@hookimpl\ndef sluicegate_stage_types(services):\n    return []\n",
            "hook 'sluicegate_stage_types': Plugin 'broken_plugin' for hook",
        ),
    ],
    ids=["import-fails", "misspelt-hook", "wrong-arguments"],
)
def test_a_broken_plugin_stops_the_start_naming_plugin_hook_and_problem(
    tmp_path: Path, module_source: str, expected: str
) -> None:
    source = broken_distribution(tmp_path, "broken_plugin", module_source)
    install([source], tmp_path / "site", tmp_path / "scratch")
    result = cli("plugins", env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 2
    assert result.stderr.startswith("sluicegate: plugin 'broken_plugin'")
    assert expected in result.stderr


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
    with FakeUpstream() as upstream, TextgenServer() as textgen:
        config = gateway_config(upstream)
        config["providers"]["inhouse"] = {
            "kind": "textgen",
            "base_url": textgen.base_url,
        }
        config["models"]["inhouse-7b"] = {
            "targets": [{"provider": "inhouse", "model": "7b"}]
        }
        process = GatewayProcess(
            tmp_path,
            database_url,
            config,
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


def test_a_third_party_provider_kind_serves_the_openai_sdk(
    plugin_gateway: tuple[GatewayProcess, str],
) -> None:
    process, key = plugin_gateway
    sdk = openai.OpenAI(
        base_url=f"{process.base_url}/v1",
        api_key=key,
        max_retries=0,
        default_headers={"x-team": "search"},
    )
    with sdk:
        completion = sdk.chat.completions.create(
            model="inhouse-7b", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "textgen says hi"
    assert completion.usage is not None and completion.usage.total_tokens == 10


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
