"""Structured logging: JSON lines with the request id and workspace bound.

The request id and workspace of the request being served are held in
context variables and added to every record logged while it is served.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

from sluicegate.core.settings import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluicegate_request_id", default=None
)
workspace_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluicegate_workspace", default=None
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
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        workspace = workspace_var.get()
        if workspace:
            entry["workspace"] = workspace
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    """Send sluicegate's and the server's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
