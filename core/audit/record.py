"""An audit record and its canonical encoding.

A record is a JSON object.  Its *canonical encoding* is the UTF-8 bytes of the
object serialised with keys sorted, no whitespace (``,`` and ``:`` as
separators), non-ASCII characters written as themselves and no floating-point
numbers (costs are integer micro-dollars, latencies integer milliseconds).  For
these value types this is exactly RFC 8785 (JSON Canonicalization Scheme), and
it is what Python's ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` produces.

A record's hash is the lowercase hex SHA-256 of its canonical encoding.  Every
record carries its chain position: ``workspace_id``, ``seq`` (1, 2, 3... per
workspace, without gaps) and ``prev_hash`` (the hash of the record with
``seq - 1``, or 64 zeros for ``seq`` 1), so the hash covers the position too.

A record kept in the database is stored as its canonical text; verification
recomputes the hash from that text and checks the links.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sluicegate.core.errors import StorageError

RECORD_VERSION = 1
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a workspace's first record."""


def canonical(value: Mapping[str, Any]) -> str:
    """The canonical JSON text of ``value`` (its UTF-8 bytes are what is hashed)."""
    _refuse_floats(value)
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def digest(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise StorageError(
            f"an audit record field holds the float {value!r}; records hold "
            "integers only (micro-dollars, milliseconds) so their encoding is exact"
        )
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def timestamp(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with microseconds: ``2026-12-03T18:10:00.000001Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Payload:
    """The bodies kept beside a record (whole or redacted) and whose they are."""

    policy: str
    """``store`` or ``redact``."""
    request: str
    response: str
    subject: str | None = None

    def digest(self) -> str:
        """What the record's ``payload_sha256`` holds for these bodies."""
        return digest(canonical({"request": self.request, "response": self.response}))


@dataclass
class PendingRecord:
    """A record not yet chained: everything but ``seq``, ``prev_hash``, ``hash``."""

    workspace_id: int
    request_id: str
    kind: str
    created_at: datetime
    fields: dict[str, Any] = field(default_factory=dict)
    payload: Payload | None = None

    def body(self, seq: int, prev_hash: str) -> dict[str, Any]:
        """The record as chained at ``seq`` after ``prev_hash``."""
        return {
            **self.fields,
            "v": RECORD_VERSION,
            "kind": self.kind,
            "workspace_id": self.workspace_id,
            "request_id": self.request_id,
            "time": timestamp(self.created_at),
            "seq": seq,
            "prev_hash": prev_hash,
        }

    def to_json(self) -> dict[str, Any]:
        """A plain form for the spool file; :meth:`from_json` reads it back."""
        payload = None
        if self.payload is not None:
            payload = {
                "policy": self.payload.policy,
                "request": self.payload.request,
                "response": self.payload.response,
                "subject": self.payload.subject,
            }
        return {
            "workspace_id": self.workspace_id,
            "request_id": self.request_id,
            "kind": self.kind,
            "created_at": timestamp(self.created_at),
            "fields": self.fields,
            "payload": payload,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingRecord:
        payload = data.get("payload")
        return cls(
            workspace_id=int(data["workspace_id"]),
            request_id=str(data["request_id"]),
            kind=str(data["kind"]),
            created_at=datetime.strptime(
                data["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ"
            ).replace(tzinfo=UTC),
            fields=dict(data["fields"]),
            payload=Payload(**payload) if payload else None,
        )


@dataclass(frozen=True)
class ChainedRecord:
    """A record at its place in the chain, as stored."""

    pending: PendingRecord
    seq: int
    prev_hash: str
    text: str
    hash: str

    @classmethod
    def of(cls, pending: PendingRecord, seq: int, prev_hash: str) -> ChainedRecord:
        text = canonical(pending.body(seq, prev_hash))
        return cls(pending, seq, prev_hash, text, digest(text))
