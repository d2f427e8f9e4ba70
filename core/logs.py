"""Structured logging: the public entry point.

The implementation lives in :mod:`sluicegate.core.observability.logging`
(JSON lines, context variables) and :mod:`sluicegate.core.observability.scrub`
(secrets and personal data masked in every record); this module re-exports
what the rest of the code base imports.
"""

from __future__ import annotations

from sluicegate.core.observability.logging import (
    JsonFormatter,
    bind_request,
    bound_stage,
    configure_logging,
    request_id_var,
    stage_var,
    workspace_var,
)

__all__ = [
    "JsonFormatter",
    "bind_request",
    "bound_stage",
    "configure_logging",
    "request_id_var",
    "stage_var",
    "workspace_var",
]
