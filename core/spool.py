"""A durable local spool for items the database could not take.

Audit records (``core/audit/writer.py``) and ledger rows
(``core/budgets/ledger_writer.py``) each have their kind of spool, told apart
by a file name prefix.  Each writer appends to its own file,
``<spool dir>/<prefix>-<random>.jsonl``, one JSON line per item (written by
the kind's ``encode``), flushed and fsync'd before the items count as kept.
The writer holds an exclusive ``flock`` on its file while it lives, so files
whose lock can be taken belong to a process that has stopped (or crashed):
:meth:`Spool.claim_orphans` adopts them for replay.  A torn last line (a crash
in mid-write) is skipped with a warning: its item was never acknowledged as
kept.

Files are replayed in the order their lines were written.  Both kinds are
keyed by request id and a replayed item whose request id is already stored is
skipped, so replaying twice is harmless.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

from sluicegate.core.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Kind(Generic[T]):
    """What one spool keeps: its file prefix and how an item becomes JSON."""

    prefix: str
    """``audit`` keeps ``audit-*.jsonl`` files."""
    noun: str
    """What the items are called in errors and logs: ``audit records``."""
    encode: Callable[[T], dict[str, Any]]
    decode: Callable[[Mapping[str, Any]], T]

    @property
    def pattern(self) -> str:
        return f"{self.prefix}-*.jsonl"


class Spool(Generic[T]):
    """This process's spool file plus any orphaned ones it has adopted."""

    def __init__(self, directory: Path, kind: Kind[T]) -> None:
        self.directory = directory
        self.kind = kind
        self.path = directory / f"{kind.prefix}-{uuid.uuid4().hex}.jsonl"
        self._own: BinaryIO | None = None
        self._own_lines = 0
        self._orphans: dict[Path, BinaryIO] = {}

    @property
    def pending(self) -> bool:
        """Whether some items wait in a spool file for the database."""
        return self._own_lines > 0 or bool(self._orphans)

    def append(self, items: Sequence[T]) -> None:
        """Write ``items`` and fsync; blocking (run it on a worker thread)."""
        lines = b"".join(
            json.dumps(self.kind.encode(item), ensure_ascii=False).encode() + b"\n"
            for item in items
        )
        try:
            own = self._open_own()
            own.write(lines)
            own.flush()
            os.fsync(own.fileno())
        except OSError as exc:
            raise StorageError(
                f"cannot spool {len(items)} {self.kind.noun} to {self.path}: "
                f"{exc}; check that SLUICEGATE_SPOOL_DIR is writable and has space"
            ) from exc
        self._own_lines += len(items)

    def claim_orphans(self) -> None:
        """Adopt the spool files of processes that no longer run."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(self.kind.pattern)):
            if path == self.path or path in self._orphans:
                continue
            try:
                handle = path.open("rb")
            except FileNotFoundError:  # another process replayed it meanwhile
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            log.info("adopting spool %s of a stopped process", path)
            self._orphans[path] = handle

    def files(self) -> list[Path]:
        """Files to replay: adopted orphans first (older), then our own."""
        own = [self.path] if self._own_lines else []
        return [*self._orphans, *own]

    def read(self, path: Path) -> list[T]:
        """The items of one spool file, in written order."""
        items = []
        with path.open("rb") as handle:
            lines = handle.read().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append(self.kind.decode(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable line %d of %s: %s", number, path, exc)
        return items

    def done(self, path: Path) -> None:
        """Every item of ``path`` is stored: empty or remove the file."""
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
