"""``sluicegate migrate``, ``workspace`` and ``key``: output, JSON and exit codes.

The first tests call the command handlers in-process (quick, precise); the
last run the real ``sluicegate`` console script as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluicegate.core.commands import key as key_command
from sluicegate.core.commands import migrate as migrate_command
from sluicegate.core.commands import workspace as workspace_command
from sluicegate.core.db.database import Database
from sluicegate.core.db.migrate import discover
from sluicegate.core.keys import KeyVerifier
from sluicegate.core.settings import Settings

ALL_MIGRATIONS = [migration.id for migration in discover()]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="sluicegate")
    subparsers = root.add_subparsers(dest="command", required=True)
    for module in (migrate_command, workspace_command, key_command):
        module.register(subparsers)
    return root


class Cli:
    """Runs command handlers in-process against one database."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.settings = Settings(database_url=url)
        self.capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        args = parser().parse_args(argv)
        status = await args.handler(args, self.settings)
        out, err = self.capsys.readouterr()
        return status, out, err

    async def json(self, *argv: str) -> Any:
        status, out, err = await self(*argv, "--json")
        assert status == 0, err
        return json.loads(out)


@pytest.fixture
def cli(database_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(database_url, capsys)


async def migrated(cli: Cli) -> None:
    status, _, err = await cli("migrate")
    assert status == 0, err


# -- in-process ----------------------------------------------------------------


@pytest.mark.anyio
async def test_migrate_reports_what_it_applied(cli: Cli) -> None:
    assert (await cli.json("migrate"))["applied"] == ALL_MIGRATIONS
    status, out, _ = await cli("migrate")
    assert status == 0 and "up to date" in out
    assert (await cli.json("migrate"))["applied"] == []


@pytest.mark.anyio
async def test_workspace_create_and_list(cli: Cli) -> None:
    await migrated(cli)
    status, out, _ = await cli("workspace", "list")
    assert status == 0 and "no workspaces" in out

    status, out, _ = await cli("workspace", "create", "acme")
    assert (status, out.strip()) == (0, "created workspace 'acme' (id 1)")
    created = await cli.json("workspace", "create", "globex")
    assert created["name"] == "globex" and isinstance(created["id"], int)

    status, out, _ = await cli("workspace", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "CREATED"]
    assert [line.split()[1] for line in lines[1:]] == ["acme", "globex"]
    listed = await cli.json("workspace", "list")
    assert [w["name"] for w in listed] == ["acme", "globex"]
    assert listed[1] == created


@pytest.mark.anyio
async def test_workspace_errors_and_exit_codes(cli: Cli) -> None:
    await migrated(cli)
    assert (await cli("workspace", "create", "acme"))[0] == 0
    status, out, err = await cli("workspace", "create", "acme")
    assert (status, out) == (1, "")
    assert err.strip() == "sluicegate: workspace 'acme' exists"
    status, _, err = await cli("workspace", "create", "Not Valid")
    assert status == 2
    assert err.startswith("sluicegate: invalid workspace name 'Not Valid'")
    assert "^[a-z0-9][a-z0-9_-]*$" in err


@pytest.mark.anyio
async def test_key_create_list_revoke(cli: Cli) -> None:
    await migrated(cli)
    await cli("workspace", "create", "acme")

    status, out, _ = await cli("key", "create", "--workspace", "acme", "--name", "ci")
    assert status == 0
    secret = next(
        line.strip() for line in out.splitlines() if line.strip().startswith("sg-")
    )
    assert "shown only once" in out
    created = await cli.json("key", "create", "--workspace", "acme")
    assert created["key"].startswith(f"sg-{created['prefix']}-")
    assert created["workspace"] == "acme" and created["revoked_at"] is None

    listed = await cli.json("key", "list")
    assert [k["name"] for k in listed] == ["ci", None]
    assert secret not in json.dumps(listed) and created["key"] not in json.dumps(listed)
    status, out, _ = await cli("key", "list", "--workspace", "acme")
    assert status == 0 and secret not in out and created["key"] not in out
    assert out.splitlines()[0].split() == [
        "ID",
        "PREFIX",
        "WORKSPACE",
        "NAME",
        "CREATED",
        "REVOKED",
    ]

    status, out, _ = await cli("key", "revoke", created["prefix"])
    assert status == 0 and "is revoked" in out
    revoked = await cli.json("key", "revoke", str(created["id"]))
    assert revoked["revoked_at"] is not None
    assert [k["revoked_at"] is None for k in await cli.json("key", "list")] == [
        True,
        False,
    ]

    db = await Database.connect(cli.settings.database_url)
    try:
        verifier = KeyVerifier(db, cache_seconds=0)
        assert await verifier.verify(secret) is not None
        assert await verifier.verify(created["key"]) is None
    finally:
        await db.close()


@pytest.mark.anyio
async def test_key_errors_and_exit_codes(cli: Cli) -> None:
    await migrated(cli)
    status, _, err = await cli("key", "create", "--workspace", "nope")
    assert status == 1
    assert "workspace 'nope' does not exist" in err and "workspace create" in err
    status, _, err = await cli("key", "revoke", "zzzzzzzz")
    assert (status, err.strip()) == (
        1,
        "sluicegate: no API key 'zzzzzzzz'; `sluicegate key list` shows the keys",
    )
    status, _, err = await cli("key", "revoke", "not a key!")
    assert status == 2 and err.startswith("sluicegate: 'not a key!' names no API key")
    status, _, err = await cli("key", "list", "--workspace", "nope")
    assert status == 1 and "'nope' does not exist" in err
    status, _, err = await cli(
        "key", "create", "--workspace", "nope", "--name", "x" * 300
    )
    assert status == 2 and "key name" in err


@pytest.mark.anyio
@pytest.mark.postgres
async def test_postgres_is_not_migrated_behind_your_back(
    postgres_admin_url: str,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    from tests.fixtures.databases import (
        create_postgres_database,
        drop_postgres_database,
    )

    url = create_postgres_database(postgres_admin_url)
    request.addfinalizer(lambda: drop_postgres_database(postgres_admin_url, url))
    cli = Cli(url, capsys)
    status, _, err = await cli("workspace", "list")
    assert status == 1
    pending = ", ".join(ALL_MIGRATIONS)
    assert f"lacks migrations {pending}: run `sluicegate migrate`" in err
    await migrated(cli)
    assert (await cli("workspace", "list"))[0] == 0


def test_missing_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["key"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["key", "create"])
    assert info.value.code == 2
    assert "--workspace" in capsys.readouterr().err


# -- the console script --------------------------------------------------------


def console_script() -> Path:
    script = Path(sys.executable).parent / "sluicegate"
    if not script.exists():
        pytest.skip(f"the sluicegate console script is not installed ({script})")
    return script


class Script:
    """Runs ``sluicegate`` as a subprocess against one database."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.path = console_script()
        self.cwd = cwd
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("SLUICEGATE_")
        }
        self.env |= {"SLUICEGATE_DATABASE_URL": url, "SLUICEGATE_LOG_FORMAT": "text"}

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.path), *argv],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *argv: str) -> Any:
        result = self(*argv, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def test_the_console_script_manages_workspaces_and_keys(
    database_url: str, tmp_path: Path
) -> None:
    sg = Script(database_url, tmp_path)
    assert sg.json("migrate")["applied"] == ALL_MIGRATIONS
    assert sg.json("migrate")["applied"] == []

    result = sg("workspace", "create", "acme")
    assert result.returncode == 0, result.stderr
    assert "created workspace 'acme'" in result.stdout
    again = sg("workspace", "create", "acme")
    assert again.returncode == 1
    assert "sluicegate: workspace 'acme' exists" in again.stderr
    assert sg("workspace", "create", "Bad Name").returncode == 2
    assert [w["name"] for w in sg.json("workspace", "list")] == ["acme"]
    assert "acme" in sg("workspace", "list").stdout

    result = sg("key", "create", "--workspace", "acme", "--name", "ci")
    assert result.returncode == 0, result.stderr
    assert "shown only once" in result.stdout
    created = sg.json("key", "create", "--workspace", "acme")
    secret = created["key"]
    assert secret.startswith(f"sg-{created['prefix']}-")
    listing = sg("key", "list", "--workspace", "acme")
    assert listing.returncode == 0 and created["prefix"] in listing.stdout
    assert secret not in listing.stdout
    assert secret not in json.dumps(sg.json("key", "list"))

    assert sg("key", "create", "--workspace", "nope").returncode == 1
    revoked = sg("key", "revoke", created["prefix"])
    assert revoked.returncode == 0, revoked.stderr
    assert sg.json("key", "list", "--workspace", "acme")[1]["revoked_at"] is not None
    unknown = sg("key", "revoke", "zzzzzzzz")
    assert unknown.returncode == 1
    assert "sluicegate: no API key 'zzzzzzzz'" in unknown.stderr
    assert sg("key", "revoke", "!!").returncode == 2
    assert sg("key").returncode == 2
