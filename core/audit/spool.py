"""A durable local spool for audit records the database could not take.

Each writer appends to its own file, ``<spool dir>/audit-<random>.jsonl``, one
JSON line per record (:meth:`PendingRecord.to_json`), flushed and fsync'd
before the records count as kept.  The writer holds an exclusive ``flock`` on
its file while it lives, so files whose lock can be taken belong to a process
that has stopped (or crashed): :meth:`Spool.claim_orphans` adopts them for
replay.  A torn last line (a crash in mid-write) is skipped with a warning: its
record was never acknowledged as kept.

Files are replayed in the order their lines were written; a replayed record
whose request id is already stored is skipped, so replaying twice is harmless.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sluicegate.core.audit.record import PendingRecord
from sluicegate.core.errors import StorageError

log = logging.getLogger(__name__)

PATTERN = "audit-*.jsonl"


class Spool:
    """This process's spool file plus any orphaned ones it has adopted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"audit-{uuid.uuid4().hex}.jsonl"
        self._own: BinaryIO | None = None
        self._own_lines = 0
        self._orphans: dict[Path, BinaryIO] = {}

    @property
    def pending(self) -> bool:
        """Whether some records wait in a spool file for the database."""
        return self._own_lines > 0 or bool(self._orphans)

    def append(self, records: Sequence[PendingRecord]) -> None:
        """Write ``records`` and fsync; blocking (run it on a worker thread)."""
        lines = b"".join(
            json.dumps(r.to_json(), ensure_ascii=False).encode() + b"\n"
            for r in records
        )
        try:
            own = self._open_own()
            own.write(lines)
            own.flush()
            os.fsync(own.fileno())
        except OSError as exc:
            raise StorageError(
                f"cannot spool {len(records)} audit records to {self.path}: {exc}; "
                "check that SLUICEGATE_SPOOL_DIR is writable and has space"
            ) from exc
        self._own_lines += len(records)

    def claim_orphans(self) -> None:
        """Adopt the spool files of processes that no longer run."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(PATTERN)):
            if path == self.path or path in self._orphans:
                continue
            handle = path.open("rb")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            log.info("adopting audit spool %s of a stopped process", path)
            self._orphans[path] = handle

    def files(self) -> list[Path]:
        """Files to replay: adopted orphans first (older), then our own."""
        own = [self.path] if self._own_lines else []
        return [*self._orphans, *own]

    def read(self, path: Path) -> list[PendingRecord]:
        """The records of one spool file, in written order."""
        records = []
        with path.open("rb") as handle:
            lines = handle.read().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(PendingRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable line %d of %s: %s", number, path, exc)
        return records

    def done(self, path: Path) -> None:
        """Every record of ``path`` is stored: empty or remove the file."""
        if path == self.path and self._own is not None:
            os.ftruncate(self._own.fileno(), 0)
            os.fsync(self._own.fileno())
            self._own_lines = 0
            return
        handle = self._orphans.pop(path)
        path.unlink(missing_ok=True)
        handle.close()

    def close(self) -> None:
        """Release the files; an empty own file is removed."""
        for handle in self._orphans.values():
            handle.close()
        self._orphans.clear()
        if self._own is None:
            return
        if self._own_lines == 0:
            self.path.unlink(missing_ok=True)
        self._own.close()
        self._own = None

    def _open_own(self) -> BinaryIO:
        if self._own is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            own = self.path.open("ab")
            fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_directory(self.directory)
            self._own = own
        return self._own


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
