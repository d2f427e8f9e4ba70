"""Scrubbing log records and error reports before they leave the process.

:class:`ScrubFilter` sits on every handler of the root logger, so it sees each
record whichever logger made it (sluicegate's, Hypercorn's, a library's).  It
renders the message with its arguments, masks secrets and personal data in
the result (:func:`~sluicegate.core.observability.patterns.scrub_text`),
renders and masks the exception and stack text too, and leaves nothing
unmasked behind on the record (arguments and ``exc_info`` are cleared).
:func:`scrub_value` does the same to any JSON-like value (a Sentry event).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from sluicegate.core.observability.patterns import scrub_text

MAX_DEPTH = 20


class ScrubFilter(logging.Filter):
    """Masks the message, arguments, exception and stack text of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_text(_message(record))
        record.args = None
        if record.exc_info:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text.rstrip("\n"))
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError) as exc:
        # A bad format string must not lose the record; its raw text is kept.
        return f"{record.msg!s} (unformattable arguments: {type(exc).__name__})"


def scrub_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it (keys too) scrubbed; a new object."""
    if depth > MAX_DEPTH:
        return "[TRUNCATED]"
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            scrub_value(key, depth + 1): scrub_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_value(item, depth + 1) for item in value]
    return value
