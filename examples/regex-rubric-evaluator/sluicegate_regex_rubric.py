"""An example evaluator plugin: a rubric of labelled regular expressions."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluicegate.core import hookimpl
from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[a-z0-9_]+$")
    pattern: str
    score: float = Field(ge=0, le=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class RegexRubricConfig(EvaluatorConfig):
    rules: list[Rule] = Field(min_length=1)
    scope: Literal["response", "prompt"] = "response"


class RegexRubric(Evaluator):
    """Labels text matching the rubric's rules; scores the worst match."""

    name = "regex_rubric"
    version = "2.0"
    Config = RegexRubricConfig
    fast = True

    def __init__(self, config: RegexRubricConfig) -> None:
        super().__init__(config)
        self.rules = [(rule, re.compile(rule.pattern)) for rule in config.rules]

    async def evaluate(self, sample: Sample) -> Verdict:
        text = sample.prompt if self.config.scope == "prompt" else sample.response
        hits = [rule for rule, pattern in self.rules if pattern.search(text or "")]
        if not hits:
            return Verdict(0.0)
        return Verdict(
            max(rule.score for rule in hits),
            tuple(rule.label for rule in hits),
            f"{len(hits)} of {len(self.rules)} rules matched",
        )


@hookimpl
def sluicegate_evaluators() -> list[type[Evaluator]]:
    return [RegexRubric]
