"""The regex rubric labels matches and scores the worst of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sluicegate_regex_rubric import RegexRubric, RegexRubricConfig

from sluicegate.core.evaluator import Sample

pytestmark = pytest.mark.anyio

RULES = [
    {"label": "refund", "pattern": "(?i)full refund", "score": 0.7},
    {"label": "legal", "pattern": "(?i)lawsuit", "score": 0.9},
]


def rubric(**config: object) -> RegexRubric:
    return RegexRubric(RegexRubricConfig.model_validate({"rules": RULES, **config}))


def sample(response: str | None, prompt: str = "hello") -> Sample:
    return Sample("req_1", "acme", "m", prompt=prompt, response=response)


async def test_no_match_scores_zero() -> None:
    verdict = await rubric().evaluate(sample("Have a nice day"))
    assert (verdict.score, verdict.labels) == (0.0, ())


async def test_matches_give_their_labels_and_the_highest_score() -> None:
    verdict = await rubric().evaluate(sample("A full refund, or a lawsuit."))
    assert verdict.score == 0.9
    assert verdict.labels == ("refund", "legal")


async def test_the_prompt_scope_judges_the_request() -> None:
    verdict = await rubric(scope="prompt").evaluate(sample(None, "FULL REFUND now"))
    assert verdict.labels == ("refund",)


def test_a_broken_pattern_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        RegexRubricConfig.model_validate(
            {"rules": [{"label": "x", "pattern": "(", "score": 0.5}]}
        )
