"""Two evaluation runs side by side: per-request score changes, label flips
and summary statistics.

Requests are matched by request id; a request judged in only one run is
counted, not compared.  A result that is an error has no score: its changes
are reported as errors, and it is left out of the means.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from sluicegate.core.evals.runs import ResultRow


@dataclass(frozen=True)
class RequestChange:
    """How one request's verdict differs from run A to run B."""

    request_id: str
    score_a: float | None
    score_b: float | None
    labels_added: tuple[str, ...]
    labels_removed: tuple[str, ...]
    error_a: str | None = None
    error_b: str | None = None

    @property
    def delta(self) -> float | None:
        if self.score_a is None or self.score_b is None:
            return None
        return round(self.score_b - self.score_a, 6)

    @property
    def changed(self) -> bool:
        return bool(
            self.delta
            or self.labels_added
            or self.labels_removed
            or (self.error_a is None) != (self.error_b is None)
        )


@dataclass
class Comparison:
    """Every common request's change and the statistics over them."""

    changes: list[RequestChange]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        deltas = [c.delta for c in self.changes if c.delta is not None]
        added = Counter(label for c in self.changes for label in c.labels_added)
        removed = Counter(label for c in self.changes for label in c.labels_removed)
        return {
            "compared": len(self.changes),
            "only_in_a": len(self.only_a),
            "only_in_b": len(self.only_b),
            "changed": sum(1 for c in self.changes if c.changed),
            "increased": sum(1 for d in deltas if d > 0),
            "decreased": sum(1 for d in deltas if d < 0),
            "mean_score_a": _mean([c.score_a for c in self.changes]),
            "mean_score_b": _mean([c.score_b for c in self.changes]),
            "mean_delta": _mean(list(deltas)),
            "errors_a": sum(1 for c in self.changes if c.error_a),
            "errors_b": sum(1 for c in self.changes if c.error_b),
            "labels_added": dict(sorted(added.items())),
            "labels_removed": dict(sorted(removed.items())),
        }


def compare(a: dict[str, ResultRow], b: dict[str, ResultRow]) -> Comparison:
    """Compare run A's results with run B's, request by request."""
    common = [request_id for request_id in a if request_id in b]
    changes = [_change(a[request_id], b[request_id]) for request_id in common]
    return Comparison(
        changes=changes,
        only_a=[request_id for request_id in a if request_id not in b],
        only_b=[request_id for request_id in b if request_id not in a],
    )


def _change(a: ResultRow, b: ResultRow) -> RequestChange:
    before, after = set(a.labels), set(b.labels)
    return RequestChange(
        request_id=a.request_id,
        score_a=a.score,
        score_b=b.score,
        labels_added=tuple(sorted(after - before)),
        labels_removed=tuple(sorted(before - after)),
        error_a=a.error,
        error_b=b.error,
    )


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(fmean(present), 6) if present else None
