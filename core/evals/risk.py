"""One risk score per request from its evaluators' scores and weights.

The score is a weighted *noisy-or*: ``risk = 1 - Π (1 - score_i) ** weight_i``.
Each evaluator is read as independent evidence that the request is risky,
with its weight as how many times that evidence counts:

* one strong finding is enough: a card number in the answer (PII score 0.9)
  keeps the risk at 0.9 however many other evaluators found nothing, where a
  weighted mean over six evaluators would dilute it to 0.15 and hide it;
* findings add up: two independent 0.5 findings give 0.75, not 0.5;
* a weight of 1 passes a lone evaluator's score through unchanged, 2 counts it
  twice (0.5 becomes 0.75), 0 leaves it out;
* an evaluator that failed (an error, no score) is left out and named in the
  components, so a missing verdict never reads as "safe" silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    """One evaluator's part in a risk score."""

    evaluator: str
    weight: float
    score: float | None
    """None when the evaluator failed."""


def risk_score(components: list[Component]) -> float:
    """The weighted noisy-or of the components' scores, in [0, 1]."""
    survival = 1.0
    for component in components:
        if component.score is None or component.weight == 0:
            continue
        survival *= math.pow(1.0 - component.score, component.weight)
    return min(1.0, max(0.0, 1.0 - survival))
