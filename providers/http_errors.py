"""Upstream failures as :class:`~sluicegate.core.errors.ProviderError`.

Shared by every HTTP provider kind: an error status becomes a ProviderError
with ``retryable`` and ``retry_after`` filled in; a timeout, a refused or reset
connection becomes one too.  Everything that may end up in a message or a log
line goes through :func:`scrub` first, so a provider key never leaves the
process.
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx
import orjson

from sluicegate.core.errors import ProviderError

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses another attempt may cure, besides every 5xx (as OpenAI's SDKs
retry them).  The route stage narrows this with its ``retry_statuses``."""

EXCERPT_CHARS = 300

_STATUS_HINTS = {
    401: "check the provider key in the variable named by api_key_env",
    403: "the provider key may not use this model or endpoint",
    404: "check base_url and the upstream model name in the gateway config",
    429: "the provider is rate limiting this key",
}
_KEY_LIKE = re.compile(r"(?i)\b(bearer\s+)\S+|\b(sk|key)-[A-Za-z0-9_\-]{12,}")


def status_error(
    target: str, response: httpx.Response, body: bytes, secrets: tuple[str | None, ...]
) -> ProviderError:
    """The :class:`ProviderError` of an upstream's error status."""
    status = response.status_code
    excerpt = error_excerpt(body, secrets)
    hint = _STATUS_HINTS.get(status)
    if 300 <= status < 400:
        hint = "redirects are not followed; set base_url to the final address"

    message = f"upstream answered HTTP {status}"
    message += f": {excerpt}" if excerpt else ""
    message += f" ({hint})" if hint else ""
    return ProviderError(
        target,
        message,
        status=status,
        retryable=status in RETRYABLE_STATUSES or status >= 500,
        retry_after=retry_after(response.headers),
        body=scrub_bytes(body, secrets),
    )


def timed_out(
    target: str, exc: Exception, *, connect_seconds: float, attempt_seconds: float
) -> ProviderError:
    """The retryable :class:`ProviderError` of a timeout of any kind."""
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"connecting took over {connect_seconds}s"
    elif isinstance(exc, httpx.PoolTimeout):
        what = "every pooled connection stayed busy; raise max_connections"
    elif isinstance(exc, TimeoutError):
        what = f"the attempt used up its {attempt_seconds}s"
    else:
        what = f"no data for {attempt_seconds}s"
    log.debug("%s: timed out (%s)", target, type(exc).__name__)
    return ProviderError(
        target, f"upstream timed out: {what}", retryable=True, timeout=True
    )


def unreachable(
    target: str, base_url: str, exc: httpx.HTTPError, secrets: tuple[str | None, ...]
) -> ProviderError:
    """The :class:`ProviderError` of a connection refused, reset or garbled."""
    retryable = isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
    detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    detail = scrub(detail, secrets)
    log.debug("%s: upstream unreachable (%s)", target, type(exc).__name__)
    return ProviderError(
        target,
        f"no answer from the upstream at {base_url}: {detail}",
        retryable=retryable,
    )


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds the upstream asks to wait: ``retry-after-ms``, else ``Retry-After``
    (seconds or an HTTP date); None if neither is there or readable."""
    milliseconds = _seconds(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0

    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_excerpt(body: bytes, secrets: tuple[str | None, ...] = ()) -> str:
    """A short, scrubbed excerpt of an upstream error: its ``error.message`` if
    the body is OpenAI- or Anthropic-shaped JSON, else the start of the body."""
    text = " ".join(scrub(_error_text(body), secrets).split())
    if len(text) > EXCERPT_CHARS:
        return text[:EXCERPT_CHARS] + "…"
    return text


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")

    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")


def scrub(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with the given secrets and anything shaped like a key redacted."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub(lambda match: f"{match.group(1) or ''}[redacted]", text)


def scrub_bytes(body: bytes, secrets: tuple[str | None, ...]) -> bytes:
    """``body`` with the given secrets redacted."""
    for secret in secrets:
        if secret:
            body = body.replace(secret.encode(), b"[redacted]")
    return body
