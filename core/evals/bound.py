"""Evaluators as a pipeline names them: a registered evaluator, its checked
configuration and that configuration's hash.

A spec in a pipeline file is ``{name, weight, timeout_seconds, ...}``: every
other key is the evaluator's own configuration, validated against its
``Config``.  The configuration hash (SHA-256 of the canonical JSON of the
validated configuration, defaults included) names the configuration in
evaluation runs, so two runs with equal hashes judged alike.

An evaluator that needs the process's services (the ``llm_judge`` calls a
model through the gateway's providers) defines ``attach(services)``; it is
called once, right after the evaluator is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.evaluator import Evaluator
from sluicegate.core.validation import problems_of

if TYPE_CHECKING:
    from sluicegate.core.services import Services


class EvaluatorSpec(BaseModel):
    """One evaluator entry of a pipeline stage; extra keys are its config."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="How much this evaluator counts in the risk score.",
    )
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)

    def settings(self) -> dict[str, Any]:
        """The evaluator's own configuration (every key but the spec's)."""
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class BoundEvaluator:
    """An evaluator instance with what identifies its verdicts."""

    evaluator: Evaluator
    spec: EvaluatorSpec
    config_json: str
    config_hash: str

    @property
    def name(self) -> str:
        return self.evaluator.name

    @property
    def version(self) -> str:
        return self.evaluator.version


def bind(
    spec: EvaluatorSpec, services: Services, *, where: str = "evaluators"
) -> BoundEvaluator:
    """Build the evaluator ``spec`` names; ConfigError naming what is wrong."""
    evaluator_type = services.registry.evaluators.get(spec.name)
    if evaluator_type is None:
        raise ConfigError(
            [
                Problem(
                    where,
                    "name",
                    repr(spec.name),
                    "one of the installed evaluators "
                    f"{sorted(services.registry.evaluators)}",
                )
            ]
        )
    try:
        config = evaluator_type.Config.model_validate(spec.settings())
    except ValidationError as exc:
        raise ConfigError(problems_of(exc, where, prefix="")) from exc

    config_json = canonical_json(config.model_dump(mode="json"))
    evaluator = evaluator_type(config)
    attach = getattr(evaluator, "attach", None)
    if callable(attach):
        attach(services)
    return BoundEvaluator(evaluator, spec, config_json, sha256_hex(config_json))


def canonical_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
