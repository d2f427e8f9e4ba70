"""Structured logs: one JSON object a line, context bound, secrets scrubbed.

The request id, workspace and stage being served live in context variables;
the HTTP layer sets the first two when a request is authenticated and the
pipeline runner sets the stage around each stage call.  Every record logged
meanwhile carries them.  Records pass the :class:`ScrubFilter` of their
handler before they are formatted, so no secret reaches the output.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

import orjson

from sluicegate.core.observability.scrub import ScrubFilter
from sluicegate.core.settings import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluicegate_request_id", default=None
)
workspace_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluicegate_workspace", default=None
)
stage_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluicegate_stage", default=None
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT = (
    ("request_id", request_id_var),
    ("workspace", workspace_var),
    ("stage", stage_var),
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, variable in _CONTEXT:
            value = variable.get()
            if value:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Send every logger's records, scrubbed, to stderr in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ScrubFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def bind_request(request_id: str | None, workspace: str | None) -> None:
    """Bind the request being served (in the current context)."""
    request_id_var.set(request_id)
    workspace_var.set(workspace)


@contextmanager
def bound_stage(stage: str) -> Iterator[None]:
    """Records logged inside carry ``stage``."""
    token = stage_var.set(stage)
    try:
        yield
    finally:
        stage_var.reset(token)
