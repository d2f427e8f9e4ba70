"""A start-of-request journal, so a request cut off by a killed process still
gets its audit record.

A request's record is built when the request ends; a process killed before
then (SIGKILL, the OOM killer) would leave none.  So the audit stage's before
step appends a short ``begun`` line to this process's journal,
``<spool dir>/inflight-<hex>-<generation>.jsonl`` (``<hex>`` as in the
process's spool file), and an ``ended`` line once the request's record is
kept.  Each line is one ``os.write`` to a file opened unbuffered in append
mode: no fsync, no thread hop.  A process kill keeps what was written (it sits
in the kernel's page cache); a machine crash or power loss can lose the lines
written since the kernel last flushed the file, and with them those requests'
records.

Like a spool file, a journal is held under an exclusive ``flock`` while its
process lives.  A successor adopts a journal whose lock it can take (and whose
spool file it has adopted too, or that has none, so a spooled record is always
replayed before its ``interrupted`` stand-in), turns every ``begun`` without
an ``ended`` into a record of fate ``interrupted`` (status
:data:`INTERRUPTED_STATUS`; see :func:`interrupted_record`) and deletes the
journal once those records are kept.  A stand-in whose request was in fact
recorded (a kill between the commit and the ``ended`` line) is dropped by the
replay's request-id dedupe.

The journal stays bounded: past ``rotate_lines`` lines the process starts the
next generation holding only the requests still open (written under a
temporary name, locked, renamed to its own new name), then deletes the old
one.  A kill in between leaves both; a successor reads a process's journals
together, so the open requests are counted once.  (Renaming over the old file
instead would make ext4 write the new one out on the spot: milliseconds.)
Under steady load some request is always open, so a rotation never waits for
an idle moment; it copies at most as many lines as requests are in flight.
A graceful close deletes it when nothing is open and otherwise leaves it for a
successor.  A torn last line (a short write) is skipped when read.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sluicegate.core.audit.capture import REQUEST_KIND
from sluicegate.core.audit.record import PendingRecord
from sluicegate.core.context import Fate

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext

log = logging.getLogger(__name__)

PATTERN = "inflight-*.jsonl"
TEMP_PATTERN = ".inflight-*.tmp"
ROTATE_LINES = 10_000
"""Lines appended after which the next generation starts; a file holds at most
this many plus the open requests it was started with."""
INTERRUPTED_STATUS = 0
"""The status of an interrupted request's record: no complete answer was sent
(a stream may have sent its 200 and some chunks before the cut)."""
BEGUN, ENDED = "begun", "ended"


@dataclass(slots=True)
class Begun:
    """What a ``begun`` line holds: the request as admitted."""

    request_id: str
    workspace_id: int
    key_id: int | None
    endpoint: str
    model: str
    stream: bool
    client_ip: str
    admitted_at: int
    """Microseconds since the Unix epoch (cheaper to take than a formatted time)."""
    request_sha256: str
    event: str = BEGUN

    @classmethod
    def of(cls, ctx: RequestContext, request_sha256: str) -> Begun:
        return cls(
            request_id=ctx.request_id,
            workspace_id=ctx.principal.workspace_id,
            key_id=ctx.principal.key_id,
            endpoint=ctx.endpoint,
            model=ctx.model,
            stream=ctx.stream,
            client_ip=ctx.client_ip,
            admitted_at=time.time_ns() // 1000,
            request_sha256=request_sha256,
        )

    def line(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_APPEND_NEWLINE)

    @property
    def admitted(self) -> datetime:
        """:attr:`admitted_at` as an aware datetime."""
        seconds, micros = divmod(self.admitted_at, 1_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def ended_line(request_id: str) -> bytes:
    ended = {"event": ENDED, "request_id": request_id}
    return orjson.dumps(ended, option=orjson.OPT_APPEND_NEWLINE)


class Journal:
    """This process's journal: appends lines, tracks the requests still open."""

    def __init__(
        self, directory: Path, name: str, *, rotate_lines: int = ROTATE_LINES
    ) -> None:
        self.directory = directory
        self.name = name
        self.generation = 0
        self.path = self._path()
        self.rotate_lines = rotate_lines
        self.open: dict[str, bytes] = {}
        """Request id -> its ``begun`` line, for every request not ended."""
        self.lines = 0
        """Lines appended since the file was started (carried ones not counted)."""
        self._fd: int | None = None
        self._failing = False
        self._closed = False

    def begin(self, begun: Begun) -> None:
        """Journal a request as begun; a failure is logged, never raised."""
        line = begun.line()
        if not self._closed and self._write(line):
            self.open[begun.request_id] = line

    def end(self, request_id: str) -> None:
        """Journal a request as ended (its record is kept)."""
        if self.open.pop(request_id, None) is not None and not self._closed:
            self._write(ended_line(request_id))

    def close(self) -> None:
        """Release the file: removed if nothing is open, else left to a successor."""
        self._closed = True
        if self._fd is None:
            return
        if self.open:
            log.warning(
                "%d requests of this process have no kept audit record; "
                "%s is left for the next process to record them as interrupted",
                len(self.open),
                self.path,
            )
        else:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self.lines = 0

    def _write(self, line: bytes) -> bool:
        try:
            self._rotate_if_due()
            assert self._fd is not None
            _write_all(self._fd, line)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot journal requests in %s: %s", self.path, exc)
            self._failing = True
            return False
        self._failing = False
        self.lines += 1
        return True

    def _rotate_if_due(self) -> None:
        """Open the file, or rotate a full one (on failure, keep appending)."""
        if self._fd is None:
            self._rotate()
        elif self.lines >= self.rotate_lines:
            try:
                self._rotate()
            except OSError as exc:
                log.warning("cannot rotate the request journal %s: %s", self.path, exc)
                self.lines = 0  # try again after another rotate_lines lines

    def _path(self) -> Path:
        return self.directory / f"inflight-{self.name}-{self.generation}.jsonl"

    def _rotate(self) -> None:
        """Start the next file with the open requests' lines; drop the old one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = self.directory / f".inflight-{uuid.uuid4().hex}.tmp"
        fd = _locked(temp, os.O_CREAT | os.O_EXCL)
        self.generation += 1
        try:
            carried = b"".join(self.open.values())
            if carried:
                _write_all(fd, carried)
            os.rename(temp, self._path())
        except OSError:
            self.generation -= 1
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
        self.path, self._fd = self._path(), fd
        self.lines = 0


def _locked(path: Path, flags: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- a successor's side ------------------------------------------------------------


class Orphans:
    """Journals of stopped processes this process holds locked until done."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._held: dict[Path, int] = {}

    @property
    def paths(self) -> list[Path]:
        return list(self._held)

    def claim(self, may_take: Callable[[str], bool]) -> None:
        """Lock every journal nobody holds whose process name (the hex of its
        spool file) ``may_take`` accepts."""
        if not self.directory.is_dir():
            return
        _remove_stray_temps(self.directory)
        for path in sorted(self.directory.glob(PATTERN)):
            name = path.stem.removeprefix("inflight-").rpartition("-")[0]
            if path in self._held or not may_take(name):
                continue
            fd = _take(path)
            if fd is not None:
                log.info("adopting the request journal %s of a stopped process", path)
                self._held[path] = fd

    def done(self) -> None:
        """Every interrupted request of the held journals is kept: delete them."""
        for path, fd in self._held.items():
            path.unlink(missing_ok=True)
            os.close(fd)
        self._held.clear()

    def close(self) -> None:
        """Let go of the held journals without deleting them."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()


def _take(path: Path) -> int | None:
    """A locked descriptor of ``path`` if its owner is gone, else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != path.stat().st_ino:
            raise BlockingIOError("the journal was rotated under us")
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_stray_temps(directory: Path) -> None:
    """Temporary files of a rotation cut off by a kill (their lines are still
    in the journal they were meant to replace)."""
    for path in directory.glob(TEMP_PATTERN):
        fd = _take(path)
        if fd is not None:
            path.unlink(missing_ok=True)
            os.close(fd)


def open_requests(paths: Iterable[Path]) -> list[Begun]:
    """The requests begun and never ended in ``paths``, in begun order."""
    begun: dict[str, Begun] = {}
    ended: set[str] = set()
    for path in paths:
        for number, entry in _entries(path):
            try:
                if entry["event"] == ENDED:
                    ended.add(str(entry["request_id"]))
                else:
                    one = _begun(entry)
                    begun.setdefault(one.request_id, one)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping line %d of %s: %r", number, path, exc)
    return [one for request_id, one in begun.items() if request_id not in ended]


def _begun(entry: dict[str, Any]) -> Begun:
    one = Begun(**entry)
    if one.event != BEGUN:
        raise ValueError(f"unknown event {one.event!r}")
    if not isinstance(one.admitted_at, int):
        raise TypeError(f"admitted_at is {one.admitted_at!r}, not an integer")
    return one


def _entries(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with contextlib.suppress(FileNotFoundError):
        for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("skipping the torn line %d of %s", number, path)
                continue
            if isinstance(entry, dict):
                yield number, entry


def interrupted_record(begun: Begun) -> PendingRecord:
    """The record of a request its process did not live to finish.

    Its time is the admission time (when it ended is not known); it has no
    response hash, no usage, no cost (nothing was settled) and no stage
    decisions (they died with the process); bodies are not kept.
    """
    fields: dict[str, Any] = {
        "fate": Fate.INTERRUPTED.value,
        "status": INTERRUPTED_STATUS,
        "error_code": None,
        "denied_by": None,
        "target": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost_micros": 0,
        "key_id": begun.key_id,
        "client_ip": begun.client_ip,
        "endpoint": begun.endpoint,
        "model": begun.model,
        "stream": begun.stream,
        "latency_ms": None,
        "upstream_ms": None,
        "decisions": [],
        "request_sha256": begun.request_sha256,
        "response_sha256": None,
        "payload_policy": "hash",
        "payload_sha256": None,
    }
    return PendingRecord(
        workspace_id=begun.workspace_id,
        request_id=begun.request_id,
        kind=REQUEST_KIND,
        created_at=begun.admitted,
        fields=fields,
    )
