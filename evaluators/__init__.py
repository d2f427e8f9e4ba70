"""Built-in evaluators, registered like any plugin's (none yet)."""

from __future__ import annotations

from typing import Any

from sluicegate.core.hookspecs import hookimpl


@hookimpl
def sluicegate_evaluators() -> list[type[Any]]:
    return []
