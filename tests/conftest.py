"""Shared test set-up: real databases, a fake upstream, real gateway processes.

Tests that need PostgreSQL or Redis skip with a reason when the service is
unreachable, unless ``SLUICEGATE_REQUIRE_SERVICES=1`` (as in CI), which turns
the skip into a failure.
"""

pytest_plugins = [
    "tests.fixtures.databases",
    "tests.fixtures.redis",
    "tests.fixtures.gateway",
    "tests.fixtures.throwaway",
]
