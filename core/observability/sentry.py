"""Error reports to Sentry, when ``SENTRY_DSN`` is set, scrubbed like the logs.

Events carry the request id as a tag and never a request body, cookie or
header value: personal-data collection is off, bodies are never attached,
local variables are not captured, and :func:`before_send` drops the
request's data and headers and masks every remaining string (message,
exception values, breadcrumbs, tags) with the same patterns as the log
scrubber.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from sluicegate.core import __version__
from sluicegate.core.observability.logging import request_id_var, workspace_var
from sluicegate.core.observability.scrub import scrub_value
from sluicegate.core.settings import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

log = logging.getLogger(__name__)

DROPPED_REQUEST_FIELDS = ("data", "cookies", "headers", "query_string", "env")


def init_sentry(settings: Settings) -> bool:
    """Start the Sentry client if ``SENTRY_DSN`` is set; True if it started."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=f"sluicegate@{__version__}",
        max_request_body_size="never",
        include_local_variables=False,
        before_send=before_send,
        before_breadcrumb=before_breadcrumb,
        integrations=[
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)
        ],
        **_no_personal_data(),
    )
    log.info("Sentry error reporting is on")
    return True


def _no_personal_data() -> dict[str, Any]:
    """Newer SDKs take ``data_collection``; older ones ``send_default_pii``."""
    accepted = inspect.signature(sentry_sdk.consts.ClientConstructor).parameters
    if "data_collection" in accepted:
        return {
            "data_collection": {
                "user_info": False,
                "http_bodies": [],
                "stack_frame_variables": False,
            }
        }
    return {"send_default_pii": False}


def before_send(event: Event, hint: Hint) -> Event | None:
    """Tag the request id and workspace; drop bodies and headers; scrub the rest."""
    request = event.get("request")
    if isinstance(request, dict):
        for name in DROPPED_REQUEST_FIELDS:
            request.pop(name, None)
    tags = event.setdefault("tags", {})
    if isinstance(tags, dict):
        request_id, workspace = request_id_var.get(), workspace_var.get()
        if request_id:
            tags["request_id"] = request_id
        if workspace:
            tags["workspace"] = workspace
    scrubbed: Event = scrub_value(event)
    return scrubbed


def before_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    scrubbed: Breadcrumb = scrub_value(crumb)
    return scrubbed


def close_sentry() -> None:
    """Send what is queued and stop the client (a no-op when it never started)."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=2.0)
