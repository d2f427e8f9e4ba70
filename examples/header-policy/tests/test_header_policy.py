"""The header policy stage allows listed values and denies everything else."""

from __future__ import annotations

import pytest
from sluicegate_header_policy import HeaderPolicyConfig, HeaderPolicyStage

from sluicegate.core.context import Principal, RequestContext

pytestmark = pytest.mark.anyio


def stage() -> HeaderPolicyStage:
    config = HeaderPolicyConfig(type="header_policy", header="X-Team", allowed=["a"])
    return HeaderPolicyStage(config, services=None)  # type: ignore[arg-type]


def request_with(headers: dict[str, str]) -> RequestContext:
    return RequestContext(
        request_id="req_1",
        principal=Principal(1, "acme", 1),
        endpoint="chat.completions",
        body={},
        raw_body=b"",
        client_ip="127.0.0.1",
        headers=headers,
        model="m",
    )


async def test_an_allowed_value_passes() -> None:
    assert await stage().before(request_with({"x-team": "a"})) is None


async def test_a_missing_header_is_denied_with_the_policy_code() -> None:
    deny = await stage().before(request_with({}))
    assert deny is not None
    assert (deny.status, deny.code) == (403, "header_policy_violation")
    assert "got None" in deny.message


async def test_another_value_is_denied() -> None:
    deny = await stage().before(request_with({"x-team": "b"}))
    assert deny is not None and "got 'b'" in deny.message


def test_an_empty_allowed_list_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="allowed"):
        HeaderPolicyConfig(type="header_policy", header="X-Team", allowed=[])
