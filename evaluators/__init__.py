"""Built-in evaluators, registered like any plugin's.

One module per evaluator: ``pii``, ``secrets``, ``prompt_injection``,
``toxicity``, ``refusal``, ``json_validity`` and ``llm_judge``; the heuristic
ones share :mod:`.patterns`.
"""

from __future__ import annotations

from sluicegate.core.evaluator import Evaluator
from sluicegate.core.hookspecs import hookimpl


@hookimpl
def sluicegate_evaluators() -> list[type[Evaluator]]:
    from sluicegate.evaluators.json_validity import JsonValidityEvaluator
    from sluicegate.evaluators.llm_judge import LlmJudgeEvaluator
    from sluicegate.evaluators.pii import PiiEvaluator
    from sluicegate.evaluators.prompt_injection import PromptInjectionEvaluator
    from sluicegate.evaluators.refusal import RefusalEvaluator
    from sluicegate.evaluators.secrets import SecretsEvaluator
    from sluicegate.evaluators.toxicity import ToxicityEvaluator

    return [
        JsonValidityEvaluator,
        LlmJudgeEvaluator,
        PiiEvaluator,
        PromptInjectionEvaluator,
        RefusalEvaluator,
        SecretsEvaluator,
        ToxicityEvaluator,
    ]
