"""Built-in stage types, registered like any plugin's.

A stage type lives in its own module here (``stages/<type>.py``) and is listed
in :func:`sluicegate_stage_types`.
"""

from __future__ import annotations

from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.stage import Stage


@hookimpl
def sluicegate_stage_types() -> list[type[Stage]]:
    from sluicegate.stages.audit import AuditStage
    from sluicegate.stages.auth import AuthStage
    from sluicegate.stages.budget import BudgetStage
    from sluicegate.stages.eval_enqueue import EvalEnqueueStage
    from sluicegate.stages.rate_limit import RateLimitStage
    from sluicegate.stages.route import RouteStage
    from sluicegate.stages.safety_input import SafetyInputStage

    return [
        AuditStage,
        AuthStage,
        BudgetStage,
        RateLimitStage,
        RouteStage,
        EvalEnqueueStage,
        SafetyInputStage,
    ]
