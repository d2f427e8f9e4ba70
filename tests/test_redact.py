"""Masking personal data and secrets in text (stored audit payloads)."""

from __future__ import annotations

import pytest

from sluicegate.core.redact import redact


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to ada.lovelace@example.co.uk", "write to [EMAIL]"),
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("call (555) 123-4567 now", "call [PHONE] now"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("key sk-proj-abcdefghijklmnop1234", "key [SECRET]"),
        ("Authorization: Bearer abc.def-ghi_jkl123", "Authorization: Bearer [SECRET]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]"),
    ],
)
def test_personal_data_and_secrets_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        '{"created": 1733241600, "total_tokens": 42}',
        "the date 2026-12-03 and version 1.2.3",
        "card-like 4111 1111 1111 1112 fails the Luhn check",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == text
