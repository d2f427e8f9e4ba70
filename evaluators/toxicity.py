"""The ``toxicity`` evaluator: threats, incitement to self-harm, slurs of
insult and profanity, from an English word and phrase list.

A lexicon is a blunt tool: it misses toxicity phrased politely and flags
quoted or reclaimed words.  It is fast enough to run before the upstream
call; a model-based classifier would be a plugin evaluator.
"""

from __future__ import annotations

import re
from typing import ClassVar

from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict
from sluicegate.evaluators.patterns import Rule, Scope, texts_in, verdict_of


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)


class ToxicityConfig(EvaluatorConfig):
    scope: Scope = "both"


class ToxicityEvaluator(Evaluator):
    """Scores the most severe category of toxic language found."""

    name = "toxicity"
    version = "1.0"
    Config = ToxicityConfig
    fast = True

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "toxicity:threat",
            0.9,
            _words(
                r"i(?:'ll| will| am going to|'m going to) (?:kill|hurt|murder|"
                r"beat|find) you",
                r"you(?:'re| are) (?:dead|going to die)",
            ),
        ),
        Rule(
            "toxicity:self_harm",
            0.9,
            _words(r"kill yourself", r"kys", r"go die", r"end your life"),
        ),
        Rule(
            "toxicity:insult",
            0.5,
            _words(
                "idiot",
                "moron",
                "imbecile",
                "stupid",
                "dumbass",
                "loser",
                "pathetic",
                "worthless",
            ),
        ),
        Rule(
            "toxicity:profanity",
            0.3,
            _words(r"fuck\w*", r"shit\w*", "bitch", "asshole", "bastard", "crap"),
        ),
    )

    config: ToxicityConfig

    async def evaluate(self, sample: Sample) -> Verdict:
        return verdict_of(self.RULES, texts_in(sample, self.config.scope))
