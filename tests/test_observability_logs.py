"""Log records are JSON lines with bound context, and carry no secret."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from sluicegate.core.logs import bind_request, bound_stage, configure_logging
from sluicegate.core.observability.patterns import scrub_text
from sluicegate.core.settings import Settings

API_KEY = "sg-abcd1234-" + "A" * 43
PROVIDER_KEY = "sk-proj-canary0123456789abcdef"
EMAIL = "jane.canary@example.org"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
PHONE = "+44 20 7946 0958"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="INFO"), stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        bind_request(None, None)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_request_workspace_and_stage(
    output: io.StringIO,
) -> None:
    bind_request("req_1", "acme")
    with bound_stage("rate_limit"):
        logging.getLogger("sluicegate.test").warning("over %d", 3)

    [entry] = lines(output)
    assert entry["message"] == "over 3"
    assert entry["level"] == "warning"
    assert entry["logger"] == "sluicegate.test"
    assert (entry["request_id"], entry["workspace"]) == ("req_1", "acme")
    assert entry["stage"] == "rate_limit"


def test_the_stage_is_unbound_after_its_step(output: io.StringIO) -> None:
    with bound_stage("budget"):
        pass
    logging.getLogger("sluicegate.test").info("later")

    assert "stage" not in lines(output)[0]


@pytest.mark.parametrize("secret", [API_KEY, PROVIDER_KEY, EMAIL, CARD, IBAN, PHONE])
def test_secrets_in_message_arguments_are_scrubbed(
    output: io.StringIO, secret: str
) -> None:
    logging.getLogger("sluicegate.test").warning("got %s from a client", secret)

    assert secret not in output.getvalue()
    assert "got [" in output.getvalue()


def test_a_bearer_token_in_the_message_itself_is_scrubbed(
    output: io.StringIO,
) -> None:
    logging.getLogger("hypercorn.error").error("header Bearer %s", "tok-9876543210ab")

    assert "tok-9876543210ab" not in output.getvalue()


def test_exception_text_is_scrubbed(output: io.StringIO) -> None:
    try:
        raise ValueError(f"upstream said: {PROVIDER_KEY} for {EMAIL}")
    except ValueError:
        logging.getLogger("sluicegate.test").exception("call failed")

    [entry] = lines(output)
    assert "ValueError" in str(entry["exception"])
    assert PROVIDER_KEY not in output.getvalue()
    assert EMAIL not in output.getvalue()


def test_secret_query_parameters_are_scrubbed() -> None:
    scrubbed = scrub_text("GET /v1/models?api_key=hunter2&x=1&token=abc")

    assert scrubbed == "GET /v1/models?api_key=[SECRET]&x=1&token=[SECRET]"


def test_a_number_that_fails_the_iban_check_is_kept() -> None:
    assert scrub_text("DE00 3704 0044 0532 0130 00") == "DE00 3704 0044 0532 0130 00"
