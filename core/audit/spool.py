"""The audit writer's spool: ``audit-*.jsonl`` files of pending records.

How a spool keeps, adopts and replays its files is ``core/spool.py``.
"""

from __future__ import annotations

from pathlib import Path

from sluicegate.core.audit.record import PendingRecord
from sluicegate.core.spool import Kind, Spool

KIND: Kind[PendingRecord] = Kind(
    prefix="audit",
    noun="audit records",
    encode=PendingRecord.to_json,
    decode=PendingRecord.from_json,
)


def audit_spool(directory: Path) -> Spool[PendingRecord]:
    """A new spool file for this process's audit writer in ``directory``."""
    return Spool(directory, KIND)
