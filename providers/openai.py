"""Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, LiteLLM and kin.

Each configured provider gets one :class:`OpenAIProvider`, which owns one
pooled :class:`httpx.AsyncClient`.  The client never follows redirects and
ignores proxy environment variables (``trust_env=False``), so nothing outside
the gateway config can send the provider key elsewhere.  The key is read from
the environment variable the config names, once, when the provider is built;
it goes out only in the ``Authorization`` header and is scrubbed from every
error message.

Failures become :class:`~sluicegate.core.errors.ProviderError`: an error
status, a connection that could not be made or was reset, a timeout, a body
that is not JSON.  ``retryable`` says whether another attempt may succeed.
Once a stream has started, a failure is never retryable: the client already
has part of the answer.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import anyio
import httpx
import orjson
from pydantic import Field, field_validator

from sluicegate.core import __version__
from sluicegate.core.context import UpstreamResponse
from sluicegate.core.errors import ConfigError, Problem, ProviderError
from sluicegate.core.provider import Provider, ProviderConfig, UpstreamCall
from sluicegate.providers.sse import DONE, MEDIA_TYPE, EventSplitter, data_of
from sluicegate.providers.usage import StreamUsage, estimate_usage, usage_from_openai

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses another attempt may cure, besides every 5xx (as OpenAI's SDKs
retry them)."""

EXCERPT_CHARS = 300

_STATUS_HINTS = {
    401: "check the provider key in the variable named by api_key_env",
    403: "the provider key may not use this model or endpoint",
    404: "check base_url and the upstream model name in the gateway config",
    429: "the provider is rate limiting this key",
}
_KEY_LIKE = re.compile(r"(?i)\b(bearer\s+)\S+|\b(sk|key)-[A-Za-z0-9_\-]{12,}")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class OpenAIProvider(Provider):
    """A provider speaking the OpenAI API at ``base_url`` (``.../v1``)."""

    kind_name: ClassVar[str] = "openai"

    class Config(ProviderConfig):
        """An ``openai`` entry under ``providers:`` in the gateway config."""

        base_url: str = Field(
            description="The API root as OpenAI's SDK takes it, usually ending "
            "in /v1 (https://api.openai.com/v1, http://localhost:8000/v1).",
        )

        @field_validator("base_url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return checked_base_url(value)

    config: Config

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config)
        self._key = read_key(name, config.api_key_env)
        self._headers = _client_headers(config, self._key)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._chat_url = f"{config.base_url}/chat/completions"
        self._embeddings_url = f"{config.base_url}/embeddings"

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        if call.stream:
            return await self._open_stream(self._chat_url, call)
        return await self._whole(self._chat_url, call)

    async def embeddings(self, call: UpstreamCall) -> UpstreamResponse:
        return await self._whole(self._embeddings_url, call)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _whole(self, url: str, call: UpstreamCall) -> UpstreamResponse:
        deadline = _deadline(call)
        response = await self._send(self._request(url, call), call, deadline)

        body = _json_object(call.target, response)
        usage = usage_from_openai(body.get("usage")) or estimate_usage(call.body, body)
        return UpstreamResponse(status=200, target=call.target, body=body, usage=usage)

    async def _open_stream(self, url: str, call: UpstreamCall) -> UpstreamResponse:
        deadline = _deadline(call)
        request = self._request(url, call, accept=MEDIA_TYPE)
        response = await self._send(request, call, deadline, stream=True)

        if MEDIA_TYPE not in response.headers.get("content-type", ""):
            raise await self._not_a_stream(response, call, deadline)

        upstream = UpstreamResponse(
            status=200, target=call.target, media_type=MEDIA_TYPE
        )
        upstream.stream = StreamRelay(response, upstream, call, deadline)
        return upstream

    def _request(
        self, url: str, call: UpstreamCall, accept: str = "application/json"
    ) -> httpx.Request:
        try:
            content = orjson.dumps(call.body)
        except orjson.JSONEncodeError as exc:
            raise ProviderError(
                call.target,
                f"the request body cannot be encoded as JSON ({exc}); "
                "it must hold only JSON values",
            ) from exc
        headers = {"content-type": "application/json", "accept": accept}
        return self._http().build_request(
            "POST", url, content=content, headers=headers, timeout=self._timeout(call)
        )

    async def _send(
        self,
        request: httpx.Request,
        call: UpstreamCall,
        deadline: float,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        try:
            with _bounded(deadline):
                response = await self._http().send(request, stream=stream)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise self._timed_out(call, exc) from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(call, exc) from exc

        if not response.is_success:
            body = await _read_and_close(response, deadline)
            raise status_error(call.target, response, body, secrets=(self._key,))
        return response

    async def _not_a_stream(
        self, response: httpx.Response, call: UpstreamCall, deadline: float
    ) -> ProviderError:
        body = await _read_and_close(response, deadline)
        media_type = response.headers.get("content-type") or "no content-type"
        return ProviderError(
            call.target,
            f"asked for a stream, the upstream answered {media_type} instead of "
            f'{MEDIA_TYPE}; check that this server supports "stream": true',
            status=response.status_code,
            body=scrub_bytes(body, (self._key,)),
        )

    def _timed_out(self, call: UpstreamCall, exc: Exception) -> ProviderError:
        if isinstance(exc, httpx.ConnectTimeout):
            what = f"connecting took over {self.config.connect_timeout_seconds}s"
        elif isinstance(exc, httpx.PoolTimeout):
            what = "every pooled connection stayed busy; raise max_connections"
        elif isinstance(exc, TimeoutError):
            what = f"the attempt used up its {call.timeout}s"
        else:
            what = f"no data for {call.timeout or self.config.timeout_seconds}s"
        log.debug("%s: timed out (%s)", call.target, type(exc).__name__)
        return ProviderError(
            call.target, f"upstream timed out: {what}", retryable=True, timeout=True
        )

    def _unreachable(self, call: UpstreamCall, exc: httpx.HTTPError) -> ProviderError:
        retryable = isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
        detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        detail = scrub(detail, (self._key,))
        log.debug("%s: upstream unreachable (%s)", call.target, type(exc).__name__)
        return ProviderError(
            call.target,
            f"no answer from the upstream at {self.config.base_url}: {detail}",
            retryable=retryable,
        )

    def _timeout(self, call: UpstreamCall) -> httpx.Timeout:
        limit = self.config.timeout_seconds
        if call.timeout is not None:
            limit = max(0.001, min(call.timeout, limit))
        return httpx.Timeout(
            limit, connect=min(limit, self.config.connect_timeout_seconds)
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            config = self.config
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(
                    config.timeout_seconds, connect=config.connect_timeout_seconds
                ),
                limits=httpx.Limits(
                    max_connections=config.max_connections,
                    max_keepalive_connections=config.max_connections,
                ),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
            )
        return self._client


class StreamRelay(AsyncIterator[bytes]):
    """Relays one upstream SSE response, each chunk as it arrives, unchanged.

    Watching the bytes on the side, it fills ``upstream.usage`` from the
    stream's usage event, or with an estimate if none came.  A stream that
    ends without ``data: [DONE]``, breaks or runs out of time raises a
    non-retryable :class:`ProviderError` after the chunks that did arrive.
    The response is closed when the stream ends, fails, or the consumer
    calls :meth:`aclose` (stopping early, or cancelled): call it from the
    consuming task.  Closing twice is harmless.
    """

    def __init__(
        self,
        response: httpx.Response,
        upstream: UpstreamResponse,
        call: UpstreamCall,
        deadline: float,
    ) -> None:
        self._response = response
        self._chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        self._upstream = upstream
        self._call = call
        self._deadline = deadline
        self._events = EventSplitter()
        self._usage = StreamUsage()
        self._received = 0
        self._done = False
        self._closed = False

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        finished = True
        try:
            chunk = await self._read()
            finished = False
        except StopAsyncIteration:
            if not self._done and data_of(self._events.pending.strip()) != DONE:
                raise self._broken("ended without data: [DONE]") from None
            raise
        except (httpx.HTTPError, httpx.StreamError, TimeoutError) as exc:
            raise self._broken(f"broke ({type(exc).__name__})", exc) from exc
        finally:
            if finished:
                await self.aclose()

        self._watch(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the upstream response and settle the usage; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._upstream.usage is None:
            self._upstream.usage = self._usage.result(self._call.body)

        with anyio.CancelScope(shield=True):
            await self._chunks.aclose()
            await self._response.aclose()

    async def _read(self) -> bytes:
        with _bounded(self._deadline):
            return await anext(self._chunks)

    def _watch(self, chunk: bytes) -> None:
        self._received += len(chunk)
        for event in self._events.feed(chunk):
            data = data_of(event)
            if data is None:
                continue
            if data == DONE:
                self._done = True
            elif (usage := self._usage.observe(data)) is not None:
                self._upstream.usage = usage

    def _broken(self, what: str, exc: BaseException | None = None) -> ProviderError:
        timeout = isinstance(exc, httpx.TimeoutException | TimeoutError)
        log.debug(
            "%s: stream %s after %d bytes", self._call.target, what, self._received
        )
        return ProviderError(
            self._call.target,
            f"the upstream stream {what} after {self._received} bytes; "
            "the client has a partial answer",
            retryable=False,
            timeout=timeout,
        )


def checked_base_url(value: str) -> str:
    """``value`` without its trailing slash, if it is a usable http(s) API root."""
    parts = urlsplit(value.strip())
    problem = None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        problem = "must be an http:// or https:// URL with a host"
    elif parts.username or parts.password:
        problem = "must not hold credentials; name the key with api_key_env"
    elif parts.query or parts.fragment:
        problem = "must not have a query or a fragment"
    if problem is not None:
        raise ValueError(
            f"{problem}, written as OpenAI's SDK takes it, "
            "e.g. https://api.openai.com/v1"
        )
    return value.strip().rstrip("/")


def read_key(provider: str, variable: str | None) -> str | None:
    """The provider key from the environment variable named ``variable``.

    No variable named: no key (a local server that needs none).  A variable
    that is unset, empty or not a valid header value is a :class:`ConfigError`
    naming the variable and the provider, never the value.
    """
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if _HEADER_SAFE.fullmatch(key):
        return key

    got = "a value with spaces or non-ASCII characters" if key else "nothing (unset)"
    raise ConfigError(
        [
            Problem(
                f"environment variable {variable}",
                f"providers.{provider}.api_key_env",
                got,
                f"set {variable} to the API key of provider {provider!r}, or "
                "point api_key_env at the variable that holds it",
            )
        ]
    )


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
    the body is OpenAI-shaped JSON, else the start of the body."""
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


def _json_object(target: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise _not_json(target, response) from exc
    if not isinstance(body, dict):
        raise _not_json(target, response)
    return body


def _not_json(target: str, response: httpx.Response) -> ProviderError:
    return ProviderError(
        target,
        f"upstream answered HTTP {response.status_code} with a body that is not a "
        f"JSON object ({len(response.content)} bytes); expected an OpenAI answer",
        status=response.status_code,
        retryable=True,
    )


def _client_headers(config: OpenAIProvider.Config, key: str | None) -> httpx.Headers:
    headers = httpx.Headers({"user-agent": f"sluicegate/{__version__}"})
    headers.update(config.headers)
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return headers


async def _read_and_close(response: httpx.Response, deadline: float) -> bytes:
    """The body of a response that will not be relayed (best effort), closed."""
    try:
        with _bounded(deadline):
            return await response.aread()
    except (httpx.HTTPError, httpx.StreamError, TimeoutError):
        return b""
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _deadline(call: UpstreamCall) -> float:
    if call.timeout is None:
        return math.inf
    if call.timeout <= 0:
        raise ProviderError(
            call.target,
            f"no time is left for this attempt (timeout {call.timeout}s)",
            timeout=True,
        )
    return anyio.current_time() + call.timeout


def _bounded(deadline: float) -> AbstractContextManager[Any]:
    """Raise TimeoutError if the block is still running at ``deadline``."""
    return nullcontext() if deadline == math.inf else anyio.fail_at(deadline)
