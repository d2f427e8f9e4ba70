"""Evaluation instruments: verdicts, the risk score distribution, deferrals.

Labels are bounded: workspace and evaluator names come from configuration.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

RISK_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class EvalMetrics:
    """What evaluations report, on the process's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.risk_scores = Histogram(
            "sluicegate_eval_risk_score",
            "Risk scores of evaluated requests (0 safe .. 1 risky).",
            ["workspace"],
            buckets=RISK_BUCKETS,
            registry=registry,
        )
        self.verdicts = Counter(
            "sluicegate_eval_verdicts",
            "Evaluator runs on requests, by whether a verdict came back.",
            ["evaluator", "outcome"],
            registry=registry,
        )
        self.deferred = Counter(
            "sluicegate_eval_deferred",
            "Evaluation jobs stored in the database because the queue was unreachable.",
            registry=registry,
        )
        self.input_flags = Counter(
            "sluicegate_safety_input_flags",
            "Requests the safety_input stage flagged or blocked.",
            ["workspace", "action"],
            registry=registry,
        )

    def evaluation(self, evaluator: str, ok: bool) -> None:
        self.verdicts.labels(evaluator, "verdict" if ok else "error").inc()

    def risk(self, workspace: str, score: float) -> None:
        self.risk_scores.labels(workspace).observe(score)
