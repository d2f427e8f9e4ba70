"""The ``prompt_injection`` evaluator: attempts to override a model's
instructions or to talk it out of its rules.

It reads the request by default (``scope: prompt``): instruction overrides
("ignore all previous instructions"), requests for the system prompt, known
jailbreak personas ("DAN", "developer mode"), role or delimiter spoofing
(``<|im_start|>system``, ``### system:``) and "no rules" role-play.  English
phrasings only; a paraphrase the patterns do not know passes.
"""

from __future__ import annotations

import re
from typing import ClassVar

from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict
from sluicegate.evaluators.patterns import Rule, Scope, texts_in, verdict_of


def _phrase(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


class PromptInjectionConfig(EvaluatorConfig):
    scope: Scope = "prompt"


class PromptInjectionEvaluator(Evaluator):
    """Scores the strongest injection or jailbreak pattern found."""

    name = "prompt_injection"
    version = "1.0"
    Config = PromptInjectionConfig
    fast = True

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "injection:override",
            0.9,
            _phrase(
                r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?"
                r"(?:of\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|"
                r"preceding|system)\s+(?:instructions?|prompts?|rules|directions)"
            ),
        ),
        Rule(
            "injection:system_prompt_leak",
            0.7,
            _phrase(
                r"\b(?:reveal|print|show|repeat|output|tell me)\s+(?:me\s+)?"
                r"(?:your\s+|the\s+)?(?:system\s+prompt|hidden\s+instructions|"
                r"initial\s+instructions)"
            ),
        ),
        Rule(
            "jailbreak:persona",
            0.9,
            _phrase(
                r"\b(?:you\s+are\s+now\s+|act\s+as\s+|pretend\s+to\s+be\s+)"
                r"(?:DAN|an?\s+unrestricted|an?\s+unfiltered|evil)\b"
                r"|\bdo\s+anything\s+now\b|\bdeveloper\s+mode\s+(?:enabled|on)\b"
                r"|\bjailbr(?:eak|oken)\b"
            ),
        ),
        Rule(
            "jailbreak:no_rules",
            0.8,
            _phrase(
                r"\b(?:without|with\s+no|free\s+of)\s+(?:any\s+)?(?:restrictions|"
                r"filters|guidelines|rules|limitations|censorship)\b"
                r"|\bbypass\s+(?:your\s+)?(?:safety|content)\s+(?:filters?|policy)"
            ),
        ),
        Rule(
            "injection:role_spoof",
            0.8,
            _phrase(
                r"<\|im_start\|>\s*system|<\|system\|>|\[/?INST\]"
                r"|(?m:^\s*#{2,}\s*(?:system|assistant)\s*:)|</?system>"
            ),
        ),
    )

    config: PromptInjectionConfig

    async def evaluate(self, sample: Sample) -> Verdict:
        return verdict_of(self.RULES, texts_in(sample, self.config.scope))
