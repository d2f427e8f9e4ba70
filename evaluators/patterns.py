"""What the heuristic evaluators share: which text to read, labelled rules,
and a verdict from what matched.

A verdict's detail counts matches per label and never quotes the matched
text: results are stored, and the text may be the very data being flagged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from sluicegate.core.evaluator import Sample, Verdict

Scope = Literal["prompt", "response", "both"]


@dataclass(frozen=True)
class Rule:
    """A label, its score when found, a pattern and an optional check."""

    label: str
    score: float
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    """Confirms a match (a checksum, say); None accepts every match."""

    def count(self, text: str) -> int:
        matches = (match.group() for match in self.pattern.finditer(text))
        if self.check is None:
            return sum(1 for _ in matches)
        return sum(1 for match in matches if self.check(match))


def texts_in(sample: Sample, scope: Scope) -> list[str]:
    """The sample's texts to read: the prompt, the response or both.

    When a sample has no response (the ``safety_input`` stage judges a request
    before it is sent), the prompt is read whatever the scope.
    """
    if sample.response is None:
        return [sample.prompt]
    if scope == "prompt":
        return [sample.prompt]
    if scope == "response":
        return [sample.response]
    return [sample.prompt, sample.response]


def verdict_of(rules: Iterable[Rule], texts: list[str]) -> Verdict:
    """The highest score among matching rules, every matching label, counts."""
    found: Counter[str] = Counter()
    score = 0.0
    for rule in rules:
        hits = sum(rule.count(text) for text in texts)
        if hits:
            found[rule.label] += hits
            score = max(score, rule.score)
    if not found:
        return Verdict(0.0)
    detail = ", ".join(f"{label} x{count}" for label, count in sorted(found.items()))
    return Verdict(score, tuple(sorted(found)), detail)
