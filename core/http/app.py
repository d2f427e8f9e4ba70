"""The Quart app: routes, request ids, error responses, start and stop.

:func:`create_app` is what Hypercorn serves (``sluicegate serve``); the
process's :class:`~sluicegate.core.http.gateway.Gateway` is built before
serving starts and closed after it ends.
"""

from __future__ import annotations

import logging
import time
import uuid

from quart import Quart, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from sluicegate.core.errors import GatewayError, HeadersTooLarge
from sluicegate.core.http.admin import admin
from sluicegate.core.http.drain import EXTENSION as DRAIN
from sluicegate.core.http.drain import DrainState
from sluicegate.core.http.errors import error_response
from sluicegate.core.http.gateway import Gateway
from sluicegate.core.http.health import health
from sluicegate.core.http.messages import messages
from sluicegate.core.http.proxy import proxy
from sluicegate.core.logs import bind_request, configure_logging
from sluicegate.core.observability.metrics_http import metrics
from sluicegate.core.observability.patterns import scrub_text
from sluicegate.core.observability.sentry import close_sentry, init_sentry
from sluicegate.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 200


def create_app(settings: Settings | None = None) -> Quart:
    """Build the app; settings default to the environment's."""
    app = Quart(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=None,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=60,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.register_blueprint(proxy)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(admin)
    app.extensions[DRAIN] = DrainState()
    app.register_blueprint(messages)
    _lifecycle(app, settings)
    _request_ids(app)
    _error_handlers(app)
    return app


def _lifecycle(app: Quart, settings: Settings | None) -> None:
    @app.before_serving
    async def start() -> None:
        resolved = settings or load_settings()
        if not logging.getLogger().handlers:  # a worker process Hypercorn spawned
            configure_logging(resolved)
        init_sentry(resolved)
        app.extensions["sluicegate"] = await Gateway.start(resolved)

    @app.after_serving
    async def stop() -> None:
        gateway: Gateway | None = app.extensions.pop("sluicegate", None)
        if gateway is not None:
            await gateway.stop()
        close_sentry()


def _request_ids(app: Quart) -> None:
    @app.before_request
    async def assign() -> None:
        g.started = time.perf_counter()
        g.request_id = f"req_{uuid.uuid4().hex}"
        bind_request(g.request_id, None)
        _bound_headers()

    @app.after_request
    async def stamp(response: Response) -> Response:
        response.headers["x-request-id"] = g.get("request_id", "")
        _count(response)
        return response


def _count(response: Response) -> None:
    """Count every response by route, status and error code (metrics)."""
    gateway: Gateway | None = current_app.extensions.get("sluicegate")
    if gateway is None:
        return
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    code = g.get("error_code")
    gateway.services.metrics.observability.response(rule, response.status_code, code)


def _bound_headers() -> None:
    """Refuse header sets too large for any honest client (431)."""
    size = sum(len(name) + len(value) + 4 for name, value in request.headers.items())
    count = len(request.headers)
    if size > MAX_HEADER_BYTES or count > MAX_HEADERS:
        raise HeadersTooLarge(
            f"the request has {count} headers of {size} bytes; the limits are "
            f"{MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes"
        )


def _error_handlers(app: Quart) -> None:
    @app.errorhandler(GatewayError)
    async def gateway_error(error: GatewayError) -> Response:
        g.error_code = error.code
        error.message = scrub_text(error.message)
        return error_response(error, g.get("request_id", ""))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        wrapped = GatewayError(f"{error.name}: {error.description}")
        wrapped.status = error.code or 500
        wrapped.code = error.name.lower().replace(" ", "_")
        wrapped.error_type = "invalid_request_error"
        g.error_code = wrapped.code
        return error_response(wrapped, g.get("request_id", ""))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error("unexpected error", exc_info=error)
        wrapped = GatewayError("an internal error occurred; see the gateway log")
        g.error_code = wrapped.code
        return error_response(wrapped, g.get("request_id", ""))
