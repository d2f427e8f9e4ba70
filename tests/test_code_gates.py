"""The code gates run with the tests: ruff format, ruff check and mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "stages", "providers", "evaluators")
BIN = Path(sys.executable).parent


def run(
    *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env=env, check=False
    )


def test_the_code_is_formatted() -> None:
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes(tmp_path: Path) -> None:
    # `sluicegate` is assembled from top-level folders by the installer's import
    # hook, which mypy does not run: give it the same layout with links.
    namespace = tmp_path / "sluicegate"
    namespace.mkdir()
    for package in PACKAGES:
        (namespace / package).symlink_to(REPO / package)
    env = {**os.environ, "MYPYPATH": str(tmp_path)}
    args = [arg for package in PACKAGES for arg in ("-p", f"sluicegate.{package}")]
    result = run(
        str(BIN / "mypy"),
        "--config-file",
        str(REPO / "pyproject.toml"),
        "--cache-dir",
        str(REPO / ".mypy_cache"),
        *args,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
