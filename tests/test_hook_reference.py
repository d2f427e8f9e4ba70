"""The hook reference is complete, documented and in step with the specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluicegate.core.hookdoc import hook_functions, render

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_the_reference_matches_the_hook_specifications() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/hooks.md is stale: run python -m sluicegate.core.hookdoc > docs/hooks.md"
    )


@pytest.mark.parametrize("hook", hook_functions(), ids=lambda hook: hook.__name__)
def test_every_hook_is_typed_and_documented(hook: object) -> None:
    doc = getattr(hook, "__doc__", "") or ""
    assert len(doc.split()) >= 15, "a hook's docstring says when it runs and why"
    assert "return" in doc.lower(), "it says what the return value means"
    annotations = getattr(hook, "__annotations__", {})
    assert "return" in annotations, "the return type is declared"
    assert all(annotations.values())


def test_every_hook_the_gateway_calls_is_specified() -> None:
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"hook\.(sluicegate_\w+)")
    called = {
        name
        for path in root.glob("core/**/*.py")
        for name in pattern.findall(path.read_text())
    }
    assert called, "the gateway calls hooks through manager.hook"
    assert called <= {hook.__name__ for hook in hook_functions()}
