"""Schemathesis drives the admin API from its own OpenAPI document: no 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from sluicegate.core.http.admin.operations import OPERATIONS
from tests.fakes.upstream import FakeUpstream
from tests.fixtures.gateway import (
    DEFAULT_PIPELINE,
    GatewayProcess,
    gateway_config,
    provision,
)

OPERATOR = "operator-token-for-schemathesis-0123"


@pytest.fixture(scope="module")
def admin_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    database_url = f"sqlite:///{workdir / 'sluicegate.db'}"
    provision(database_url, ["acme", "globex"])
    with FakeUpstream() as upstream:
        process = GatewayProcess(
            workdir,
            database_url,
            gateway_config(upstream),
            {"default": DEFAULT_PIPELINE},
            env={"SLUICEGATE_ADMIN_TOKEN": OPERATOR},
        )
        with process:
            yield process


def test_no_admin_operation_answers_with_a_server_error(
    admin_gateway: GatewayProcess,
) -> None:
    url = f"{admin_gateway.base_url}/admin/v1/openapi.json"
    schema = schemathesis.openapi.from_url(url)
    operations = [result.ok() for result in schema.get_all_operations()]

    for operation in operations:
        _fuzz(operation.as_strategy(), admin_gateway.base_url)

    assert len(operations) == len(OPERATIONS)


def _fuzz(strategy: st.SearchStrategy[schemathesis.Case], base_url: str) -> None:
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(
            base_url=f"{base_url}/admin/v1",
            headers={"authorization": f"Bearer {OPERATOR}"},
        )
        case.validate_response(response, checks=[not_a_server_error])

    check()
