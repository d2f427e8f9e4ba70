"""Turning pydantic validation errors into :class:`Problem` lists."""

from __future__ import annotations

from pydantic import ValidationError

from sluicegate.core.errors import Problem


def problems_of(exc: ValidationError, source: str, prefix: str = "") -> list[Problem]:
    """One Problem per pydantic error: field path, what arrived, what is allowed."""
    problems = []
    for error in exc.errors():
        parts = [prefix] if prefix else []
        parts.extend(str(part) for part in error["loc"])
        allowed = str(error["msg"]).removeprefix("Value error, ")
        got = "(missing)" if error["type"] == "missing" else repr(error.get("input"))
        if len(got) > 200:
            got = got[:200] + "…"
        problems.append(Problem(source, ".".join(parts), got, allowed))
    return problems
