"""GDPR erasure: removing one end user's content from a workspace.

The *subject* is the end user a client names (OpenAI's ``user`` field, or the
principal's subject); the audit stage stores it beside each payload.
:func:`erase_subject` deletes, in sweeps of one transaction each:

* the subject's payloads (``audit_payload`` rows whose ``subject`` is it),
  through deletion grants (:mod:`.deletion`);
* evaluation jobs still waiting in ``evaluation_deferred`` that carry the
  subject's text (their request is one of those payloads, or their body's
  ``user`` is the subject).

Each sweep first appends an ``erasure`` audit record to the workspace's chain
with what it removes: counts, the digest of the payloads' request ids and the
SHA-256 of the subject (never the subject itself, so the chain holds no new
personal data, yet an auditor who knows the subject can find its erasure).  A
subject with nothing stored still gets one record: the request was honoured.
The chain keeps verifying: records only lose payloads, which they hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sluicegate.core.audit.deletion import (
    append_event,
    delete_payloads,
    delete_where_in,
    ids_digest,
    lock_chain,
)
from sluicegate.core.audit.record import digest
from sluicegate.core.audit.verify import workspaces
from sluicegate.core.db.database import Database, storage_errors
from sluicegate.core.errors import InvalidRequest

# TODO(erasure-reach): content outside this database is not reached: payloads
# still in a gateway's local spool (written while the database was away) are
# stored after the erasure ran, and evaluation jobs already on the Redis queue
# carry the text until a worker runs them.  evaluation_result.detail and error
# (an LLM judge's reason, a malformed judge answer) may quote content and are
# append-only, so they are not erased either.
BATCH = 500
ERASURE_KIND = "erasure"
DEFERRED_PAGE = 500


@dataclass
class ErasureResult:
    """What one erasure removed from one workspace."""

    workspace: str
    subject_sha256: str
    payloads_deleted: int = 0
    deferred_evaluations_deleted: int = 0
    audit_records: list[str] = field(default_factory=list)
    """Request ids of the ``erasure`` records written, in order."""


async def erase_subject(
    db: Database, workspace: str, subject: str, now: datetime, batch: int = BATCH
) -> ErasureResult:
    """Remove ``subject``'s payloads and queued evaluation inputs; record it."""
    if not subject:
        raise InvalidRequest(
            "the subject is empty; pass the end-user id the client sent "
            "(OpenAI's `user` field)"
        )
    [(workspace_id, name)] = await workspaces(db, workspace)
    result = ErasureResult(name, digest(subject))
    with storage_errors(f"erasing a subject in workspace {name!r}"):
        while await _sweep(db, workspace_id, subject, now, batch, result):
            pass
    return result


async def _sweep(
    db: Database,
    workspace_id: int,
    subject: str,
    now: datetime,
    batch: int,
    result: ErasureResult,
) -> bool:
    """One transaction of work; False when there was nothing (more) to do."""
    async with db.transaction():
        await lock_chain(db, workspace_id)
        payloads = await _subject_payloads(db, workspace_id, subject, batch)
        deferred = await _deferred_jobs(db, workspace_id, subject, set(payloads))
        if result.audit_records and not payloads and not deferred:
            return False

        fields = {
            "subject_sha256": result.subject_sha256,
            "payloads_deleted": len(payloads),
            "payload_request_ids_sha256": ids_digest(payloads),
            "deferred_evaluations_deleted": len(deferred),
        }
        record = await append_event(db, workspace_id, ERASURE_KIND, now, fields)
        await delete_payloads(db, payloads, record, now)
        await delete_where_in(db, "evaluation_deferred", "id", deferred)

    result.audit_records.append(record.pending.request_id)
    result.payloads_deleted += len(payloads)
    result.deferred_evaluations_deleted += len(deferred)
    return bool(payloads or deferred)


async def _subject_payloads(
    db: Database, workspace_id: int, subject: str, limit: int
) -> list[str]:
    rows = await db.fetch(
        "SELECT request_id FROM audit_payload WHERE workspace_id = {} "
        "AND subject = {} ORDER BY id LIMIT {}",
        workspace_id,
        subject,
        limit,
    )
    return [str(row["request_id"]) for row in rows]


async def _deferred_jobs(
    db: Database, workspace_id: int, subject: str, request_ids: set[str]
) -> list[int]:
    """Ids of deferred evaluation jobs of this workspace that carry the subject."""
    found: list[int] = []
    after = 0
    while True:
        rows = await db.fetch(
            "SELECT id, request_id, job FROM evaluation_deferred WHERE id > {} "
            "ORDER BY id LIMIT {}",
            after,
            DEFERRED_PAGE,
        )
        found += [
            int(row["id"])
            for row in rows
            if _carries(row, workspace_id, subject, request_ids)
        ]
        if len(rows) < DEFERRED_PAGE:
            return found
        after = int(rows[-1]["id"])


def _carries(
    row: dict[str, object], workspace_id: int, subject: str, request_ids: set[str]
) -> bool:
    if row["request_id"] in request_ids:
        return True
    try:
        job = json.loads(str(row["job"]))
    except ValueError:
        return False
    body = job.get("request_body") if isinstance(job, dict) else None
    return (
        isinstance(body, dict)
        and job.get("workspace_id") == workspace_id
        and body.get("user") == subject
    )
