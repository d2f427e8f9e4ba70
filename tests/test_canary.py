"""Canary secrets planted in requests and upstream errors leak nowhere.

Secrets and personal data go in through headers, bodies, query strings and an
upstream error that echoes them; the gateway log, ``/metrics``, the Sentry
envelopes it sends, the error responses and the audit payloads it stores
redacted must hold none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import openai
import pytest

from sluicegate.core.db.database import Database
from tests.fakes.sentry import FakeSentry
from tests.fakes.upstream import FakeUpstream, Reply
from tests.fixtures.gateway import (
    PUBLIC_MODEL,
    UPSTREAM_KEY,
    GatewayProcess,
    gateway_config,
    provision,
)

PROVIDER_KEY = "sk-canaryprovider0123456789abcdef"
API_KEY = "sg-canaryaa-" + "K" * 43
BEARER = "canarybearertoken0123456789"
EMAIL = "canary.person@example.org"
CARD = "4111111111111111"
IBAN = "GB82WEST12345698765432"
QUERY_SECRET = "canaryquerysecret0123"
CANARIES = (PROVIDER_KEY, API_KEY, BEARER, EMAIL, CARD, IBAN, QUERY_SECRET)
PROMPT = f"my card {CARD}, mail {EMAIL}, iban {IBAN}, key {PROVIDER_KEY}"
PIPELINE = {
    "stages": [
        {"type": "audit", "payloads": "redact"},
        {"type": "auth"},
        {"type": "route", "retries": 0},
    ]
}


@pytest.fixture(scope="module")
def sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        yield fake


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(expected_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def canary_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
    sentry: FakeSentry,
) -> Iterator[tuple[GatewayProcess, str]]:
    workdir = tmp_path_factory.mktemp("canary")
    database_url = f"sqlite:///{workdir / 'sluicegate.db'}"
    keys = provision(database_url, ["acme"])
    process = GatewayProcess(
        workdir,
        database_url,
        gateway_config(upstream),
        {"default": PIPELINE},
        env={"SENTRY_DSN": sentry.dsn, "SLUICEGATE_LOG_LEVEL": "DEBUG"},
    )
    with process:
        yield process, keys["acme"]


def plant(process: GatewayProcess, key: str, upstream: FakeUpstream) -> list[str]:
    """Send every planted request; return the error responses' bodies."""
    echoed = f"rejected {PROMPT}; you sent Authorization: Bearer {BEARER}"
    echo = {"error": {"message": echoed, "type": "invalid_request_error"}}
    upstream.script([Reply(), Reply(status=400, body=echo)])
    sdk = openai.OpenAI(
        base_url=f"{process.base_url}/v1",
        api_key=key,
        max_retries=0,
        default_headers={"x-debug": f"Bearer {BEARER}", "x-mail": EMAIL},
        default_query={"api_key": QUERY_SECRET},
    )
    messages = [{"role": "user", "content": PROMPT}]
    sdk.chat.completions.create(model=PUBLIC_MODEL, messages=messages, user=EMAIL)
    errors = []
    with pytest.raises(openai.APIStatusError) as upstream_error:
        sdk.chat.completions.create(model=PUBLIC_MODEL, messages=messages)
    errors.append(upstream_error.value.response.text)
    errors += [_raw(process, key, body) for body in _bad_bodies()]
    errors.append(_raw(process, API_KEY, {"model": PUBLIC_MODEL, "messages": []}))
    return errors


def _bad_bodies() -> list[Any]:
    return [
        f'{{"model": "{PUBLIC_MODEL}", "messages": "{PROMPT}"',
        {"model": EMAIL, "messages": [{"role": "user", "content": PROMPT}]},
        {"model": PUBLIC_MODEL, "messages": [{"role": PROMPT, "content": CARD}]},
    ]


def _raw(process: GatewayProcess, key: str, body: Any) -> str:
    content = body if isinstance(body, str) else None
    response = httpx.post(
        f"{process.base_url}/v1/chat/completions?token={QUERY_SECRET}",
        headers={"authorization": f"Bearer {key}", "x-card": CARD},
        content=content,
        json=None if content is not None else body,
        timeout=10,
    )
    assert response.status_code >= 400, response.text
    return response.text


async def _audit_payloads(database_url: str) -> str:
    database = await Database.connect(database_url)
    try:
        rows = await database.fetch(
            "SELECT request_body, response_body FROM audit_payload"
        )
    finally:
        await database.close()
    assert rows, "the audit stage stored no payload"
    return "\n".join(row["request_body"] + row["response_body"] for row in rows)


@pytest.fixture(scope="module")
def planted(
    canary_gateway: tuple[GatewayProcess, str], upstream: FakeUpstream
) -> dict[str, str]:
    process, key = canary_gateway
    errors = plant(process, key, upstream)
    metrics = httpx.get(f"{process.base_url}/metrics", timeout=10).text
    assert process.stop() == 0
    return {
        "error responses": "\n".join(errors),
        "metrics": metrics,
        "log": process.log(),
        "audit payloads": anyio.run(_audit_payloads, process.database_url),
    }


def test_the_upstream_received_the_canaries(
    planted: dict[str, str], upstream: FakeUpstream
) -> None:
    assert PROMPT in str(upstream.requests[0].json)


PLACES = [
    (place, canary)
    for place in ("error responses", "metrics", "log", "audit payloads")
    for canary in CANARIES
]


@pytest.mark.parametrize(("place", "canary"), PLACES)
def test_no_canary_leaves_the_process(
    planted: dict[str, str], place: str, canary: str
) -> None:
    assert canary not in planted[place]


@pytest.mark.parametrize("canary", CANARIES)
def test_no_canary_reaches_sentry(
    planted: dict[str, str], sentry: FakeSentry, canary: str
) -> None:
    assert canary.encode() not in sentry.received()
