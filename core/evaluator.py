"""Evaluators: versioned judges of a request and its response.

An evaluator is an :class:`Evaluator` subclass with a unique ``name``, a
``version`` (bump it whenever its verdicts can change for the same input) and
a pydantic ``Config``.  Plugins return evaluator classes from the
``sluicegate_evaluators`` hook.  Evaluators run in background workers on
stored requests and responses (and, when they are ``fast``, in the
``safety_input`` stage before the upstream call), never on the critical path
of a served response.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class EvaluatorConfig(BaseModel):
    """Settings every evaluator has; an evaluator's ``Config`` adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Sample:
    """What an evaluator judges: one request and, if there was one, its answer."""

    request_id: str
    workspace: str
    model: str
    prompt: str
    """The request's text (message contents joined), as stored."""
    response: str | None
    """The answer's text, or None when judging input only."""
    request_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """An evaluator's finding: a risk score in [0, 1] and its labels."""

    score: float
    labels: tuple[str, ...] = ()
    detail: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a score is between 0 and 1; got {self.score!r}")


class Evaluator(ABC):
    """Base class of evaluators."""

    name: ClassVar[str]
    version: ClassVar[str]
    Config: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig
    fast: ClassVar[bool] = False
    """True for cheap, local heuristics the ``safety_input`` stage may run."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    async def evaluate(self, sample: Sample) -> Verdict:
        """Judge ``sample``; raise only for a fault of the evaluator itself."""
