"""What every HTTP provider kind shares: one pooled client, sending, failures.

An :class:`HttpProvider` owns one :class:`httpx.AsyncClient`, created on first
use, sending through :class:`AiohttpTransport`.  The client never follows
redirects and ignores proxy environment variables (``trust_env=False``), so
nothing outside the gateway config can send the provider key elsewhere; it
keeps no cookies, so one workspace's call never carries what an upstream set
on another's.  The key is read once, from the environment variable the
config names, and is scrubbed from every error message.
"""

from __future__ import annotations

import os
import re
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from sluicegate.core import __version__
from sluicegate.core.errors import ConfigError, Problem, ProviderError
from sluicegate.core.provider import Provider, UpstreamCall
from sluicegate.providers.aiohttp_transport import AiohttpTransport
from sluicegate.providers.http_errors import status_error, timed_out, unreachable
from sluicegate.providers.relay import bounded, read_and_close

_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class HttpProvider(Provider):
    """A provider kind reached over HTTP at ``config.base_url``."""

    def __init__(
        self,
        name: str,
        config: Any,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config)
        self._key = read_key(name, config.api_key_env)
        self._headers = self.client_headers(self._key)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def client_headers(self, key: str | None) -> httpx.Headers:
        """Headers of every request: the user agent, the config's, the key's."""
        headers = httpx.Headers({"user-agent": f"sluicegate/{__version__}"})
        headers.update(self.config.headers)
        return headers

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(
        self,
        request: httpx.Request,
        call: UpstreamCall,
        deadline: float,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        """Send ``request``; a success status returns, anything else raises."""
        try:
            with bounded(deadline):
                response = await self.http().send(request, stream=stream)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise timed_out(
                call.target,
                exc,
                connect_seconds=self.config.connect_timeout_seconds,
                attempt_seconds=call.timeout or self.config.timeout_seconds,
            ) from exc
        except httpx.HTTPError as exc:
            raise unreachable(
                call.target, self.config.base_url, exc, (self._key,)
            ) from exc

        if not response.is_success:
            body = await read_and_close(response, deadline)
            raise status_error(call.target, response, body, secrets=(self._key,))
        return response

    def timeout(self, call: UpstreamCall) -> httpx.Timeout:
        """The attempt's timeouts: the config's, shortened by the deadline."""
        limit = self.config.timeout_seconds
        if call.timeout is not None:
            limit = max(0.001, min(call.timeout, limit))
        return httpx.Timeout(
            limit, connect=min(limit, self.config.connect_timeout_seconds)
        )

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            config = self.config
            transport = self._transport or AiohttpTransport(
                max_connections=config.max_connections
            )
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(
                    config.timeout_seconds, connect=config.connect_timeout_seconds
                ),
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=())),
                follow_redirects=False,
                trust_env=False,
                transport=transport,
            )
        return self._client


def encode_body(call: UpstreamCall, body: Any) -> bytes:
    """``body`` as JSON bytes, or a ProviderError naming what cannot be encoded."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise ProviderError(
            call.target,
            f"the request body cannot be encoded as JSON ({exc}); "
            "it must hold only JSON values",
        ) from exc


def checked_base_url(value: str, example: str) -> str:
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
            f"{problem}, written as the provider's SDK takes it, e.g. {example}"
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
