"""Built-in stage types, registered like any plugin's.

A stage type lives in its own module here (``stages/<type>.py``) and is listed
in :func:`sluicegate_stage_types`.
"""

from __future__ import annotations

from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.stage import Stage


@hookimpl
def sluicegate_stage_types() -> list[type[Stage]]:
    from sluicegate.stages.auth import AuthStage
    from sluicegate.stages.route import RouteStage

    return [AuthStage, RouteStage]
