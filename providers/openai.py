"""Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, LiteLLM and kin.

Each configured provider gets one :class:`OpenAIProvider`, which owns one
pooled HTTP client (see :mod:`~sluicegate.providers.http_base`).  The key goes
out only in the ``Authorization`` header.

Failures become :class:`~sluicegate.core.errors.ProviderError`: an error
status, a connection that could not be made or was reset, a timeout, a body
that is not JSON.  ``retryable`` says whether another attempt may succeed.
Once a stream has started, a failure is never retryable: the client already
has part of the answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import orjson
from pydantic import Field, field_validator

from sluicegate.core.context import UpstreamResponse
from sluicegate.core.errors import ProviderError
from sluicegate.core.provider import ProviderConfig, UpstreamCall
from sluicegate.providers.http_base import (
    HttpProvider,
    checked_base_url,
    encode_body,
    read_key,
)
from sluicegate.providers.http_errors import scrub_bytes
from sluicegate.providers.relay import StreamRelay, attempt_deadline, read_and_close
from sluicegate.providers.sse import MEDIA_TYPE
from sluicegate.providers.usage import estimate_usage, usage_from_openai

__all__ = ["OpenAIProvider", "StreamRelay", "read_key"]


class OpenAIProvider(HttpProvider):
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
            return checked_base_url(value, "https://api.openai.com/v1")

    config: Config

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config, transport=transport)
        self._chat_url = f"{config.base_url}/chat/completions"
        self._embeddings_url = f"{config.base_url}/embeddings"

    def client_headers(self, key: str | None) -> httpx.Headers:
        headers = super().client_headers(key)
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        if call.stream:
            return await self._open_stream(self._chat_url, call)
        return await self._whole(self._chat_url, call)

    async def embeddings(self, call: UpstreamCall) -> UpstreamResponse:
        return await self._whole(self._embeddings_url, call)

    async def _whole(self, url: str, call: UpstreamCall) -> UpstreamResponse:
        deadline = attempt_deadline(call)
        response = await self.send(self._request(url, call), call, deadline)

        body = json_object(call.target, response)
        usage = usage_from_openai(body.get("usage")) or estimate_usage(call.body, body)
        return UpstreamResponse(status=200, target=call.target, body=body, usage=usage)

    async def _open_stream(self, url: str, call: UpstreamCall) -> UpstreamResponse:
        deadline = attempt_deadline(call)
        request = self._request(url, call, accept=MEDIA_TYPE)
        response = await self.send(request, call, deadline, stream=True)

        if MEDIA_TYPE not in response.headers.get("content-type", ""):
            raise await not_a_stream(response, call, deadline, (self._key,))

        upstream = UpstreamResponse(
            status=200, target=call.target, media_type=MEDIA_TYPE
        )
        upstream.stream = StreamRelay(response, upstream, call, deadline)
        return upstream

    def _request(
        self, url: str, call: UpstreamCall, accept: str = "application/json"
    ) -> httpx.Request:
        headers = {"content-type": "application/json", "accept": accept}
        return self.http().build_request(
            "POST",
            url,
            content=encode_body(call, call.body),
            headers=headers,
            timeout=self.timeout(call),
        )


async def not_a_stream(
    response: httpx.Response,
    call: UpstreamCall,
    deadline: float,
    secrets: tuple[str | None, ...],
) -> ProviderError:
    """The error of a 2xx answer to a stream request that is not SSE."""
    body = await read_and_close(response, deadline)
    media_type = response.headers.get("content-type") or "no content-type"
    return ProviderError(
        call.target,
        f"asked for a stream, the upstream answered {media_type} instead of "
        f'{MEDIA_TYPE}; check that this server supports "stream": true',
        status=response.status_code,
        body=scrub_bytes(body, secrets),
    )


def json_object(target: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a whole answer; a retryable error if it is not one."""
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
        f"JSON object ({len(response.content)} bytes); expected a JSON answer",
        status=response.status_code,
        retryable=True,
    )
