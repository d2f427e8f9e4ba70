"""Sentry events are scrubbed, tagged with the request id, and carry no body."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sentry_sdk

from sluicegate.core.logs import bind_request
from sluicegate.core.observability.sentry import close_sentry, init_sentry
from sluicegate.core.settings import Settings
from tests.fakes.sentry import FakeSentry

CANARIES = (
    "sk-canary-provider-0123456789abcdef",
    "sg-zzzz9999-" + "C" * 43,
    "canary.person@example.org",
    "4111111111111111",
)


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        init_sentry(Settings(sentry_dsn=fake.dsn))
        try:
            yield fake
        finally:
            close_sentry()
            bind_request(None, None)


def test_no_client_starts_without_a_dsn() -> None:
    assert init_sentry(Settings(sentry_dsn=None)) is False


def test_an_error_log_reaches_sentry_without_its_secrets(sentry: FakeSentry) -> None:
    bind_request("req_canary", "acme")
    logging.getLogger("sluicegate.test").info("breadcrumb with %s", CANARIES[2])
    try:
        raise RuntimeError(f"upstream echoed {CANARIES[0]} and {CANARIES[1]}")
    except RuntimeError:
        logging.getLogger("sluicegate.test").exception("failed for %s", CANARIES[3])
    sentry_sdk.flush(5)

    assert sentry.wait_for(1)
    received = sentry.received()
    assert b"RuntimeError" in received
    for canary in CANARIES:
        assert canary.encode() not in received


def test_an_event_is_tagged_with_the_request_id(sentry: FakeSentry) -> None:
    bind_request("req_tagged", "acme")
    sentry_sdk.capture_message("something happened")
    sentry_sdk.flush(5)

    assert sentry.wait_for(1)
    assert b'"request_id":"req_tagged"' in sentry.received().replace(b" ", b"")
