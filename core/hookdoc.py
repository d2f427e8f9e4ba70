"""Render the hook reference (``docs/hooks.md``) from the hook specifications.

``python -m sluicegate.core.hookdoc > docs/hooks.md`` regenerates it; a test
fails when the file and the specifications disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sluicegate.core import hookspecs

HEADER = """# Hook reference

Generated from `core/hookspecs.py` by `python -m sluicegate.core.hookdoc`;
do not edit by hand (a test compares the two).

A plugin implements hooks with functions decorated by
`sluicegate.core.hookimpl`, named exactly as below, taking any subset of the
listed arguments. Hooks are called synchronously; where a hook says it may
return an awaitable, the gateway awaits it.
"""


def hook_functions() -> list[Callable[..., Any]]:
    """Every hook specification, in the order of the module."""
    found = [
        value
        for name, value in vars(hookspecs).items()
        if name.startswith("sluicegate_") and callable(value)
    ]
    return sorted(found, key=lambda function: function.__code__.co_firstlineno)


def render() -> str:
    sections = [HEADER]
    for function in hook_functions():
        sections.append(_section(function))
    return "\n".join(sections)


def _section(function: Callable[..., Any]) -> str:
    options = getattr(function, f"{hookspecs.PROJECT}_spec", {}) or {}
    kind = "first non-None result wins" if options.get("firstresult") else "all run"
    doc = inspect.cleandoc(function.__doc__ or "")
    code = f"def {function.__name__}{signature_of(function)}"
    return f"## `{function.__name__}`\n\n```python\n{code}\n```\n\n*{kind}*\n\n{doc}\n"


def signature_of(function: Callable[..., Any]) -> str:
    """``(name: Type, ...) -> Return`` as written in the specification."""
    signature = inspect.signature(function)
    params = ", ".join(
        f"{name}: {param.annotation}" for name, param in signature.parameters.items()
    )
    return f"({params}) -> {signature.return_annotation}"


if __name__ == "__main__":
    print(render(), end="")
