"""Rate-limit declarations in a pipeline file are validated strictly."""

from __future__ import annotations

from typing import Any

import pytest

from sluicegate.core.errors import ConfigError
from sluicegate.core.limits.estimate import estimate_tokens
from sluicegate.core.limits.headers import duration
from sluicegate.core.pipeline import parse_pipeline
from sluicegate.core.stage import Stage
from sluicegate.stages.rate_limit import RateLimitConfig, RateLimitStage


class AnswerStage(Stage):
    """Stands in for ``route``: a pipeline needs one stage that answers."""

    type_name = "route"
    produces_response = True


TYPES: dict[str, type[Stage]] = {"rate_limit": RateLimitStage, "route": AnswerStage}


def problems(*limits: Any) -> str:
    raw = {
        "stages": [
            {"type": "rate_limit", "limits": list(limits)},
            {"type": "route"},
        ]
    }
    with pytest.raises(ConfigError) as refused:
        parse_pipeline(raw, TYPES, source="acme.yaml")
    return str(refused.value)


def test_the_documented_example_is_accepted() -> None:
    raw = {
        "stages": [
            {
                "type": "rate_limit",
                "on_failure": "open",
                "limits": [
                    {"scope": "api_key", "requests": 600, "per": "minute"},
                    {"scope": "workspace", "tokens": 200000, "per": "minute"},
                    {"scope": "api_key", "concurrent": 20},
                ],
            },
            {"type": "route"},
        ]
    }
    spec = parse_pipeline(raw, TYPES, source="acme.yaml")
    config = spec.stages[0][1]
    assert isinstance(config, RateLimitConfig)
    assert [rule.window for rule in config.limits] == [60, 60, 0]


def test_a_rate_limit_fails_open_unless_told_otherwise() -> None:
    config = RateLimitConfig.model_validate(
        {"type": "rate_limit", "limits": [{"scope": "ip", "concurrent": 1}]}
    )
    assert config.on_failure == "open"


def test_a_limit_with_two_units_is_refused() -> None:
    message = problems({"scope": "api_key", "requests": 1, "tokens": 5, "per": "day"})
    assert "acme.yaml: stages.0.limits.0" in message
    assert "exactly one of requests, tokens and concurrent" in message


def test_a_limit_without_a_unit_is_refused() -> None:
    assert "got none" in problems({"scope": "api_key", "per": "day"})


def test_a_window_limit_needs_per() -> None:
    assert "needs 'per'" in problems({"scope": "api_key", "requests": 5})


def test_a_concurrent_limit_takes_no_per() -> None:
    message = problems({"scope": "api_key", "concurrent": 5, "per": "minute"})
    assert "has no 'per'" in message


def test_an_unknown_period_names_the_allowed_ones() -> None:
    message = problems({"scope": "ip", "requests": 5, "per": "fortnight"})
    assert "'fortnight'" in message
    assert "second, minute, hour or day" in message


def test_a_counted_period_is_read() -> None:
    config = RateLimitConfig.model_validate(
        {
            "type": "rate_limit",
            "limits": [{"scope": "ip", "requests": 5, "per": "10 seconds"}],
        }
    )
    assert config.limits[0].window == 10


def test_an_unknown_scope_is_refused() -> None:
    assert "'tenant'" in problems({"scope": "tenant", "requests": 5, "per": "day"})


def test_a_limit_must_be_positive() -> None:
    assert "greater than 0" in problems({"scope": "ip", "requests": 0, "per": "day"})


def test_the_same_limit_twice_is_refused() -> None:
    rule = {"scope": "ip", "requests": 5, "per": "minute"}
    assert "same window" in problems(rule, {**rule, "requests": 9})


def test_an_unknown_field_is_refused() -> None:
    message = problems({"scope": "ip", "requests": 5, "per": "day", "burst": 3})
    assert "stages.0.limits.0.burst" in message


def test_the_token_estimate_is_prompt_chars_over_four_plus_max_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
    assert estimate_tokens("chat.completions", body, 1024) == 3 + 20


def test_the_token_estimate_counts_text_parts_and_choices() -> None:
    content = [{"type": "text", "text": "12345678"}, {"type": "text", "text": "1"}]
    body = {"messages": [{"role": "user", "content": content}], "n": 2}
    assert estimate_tokens("chat.completions", body, 100) == 3 + 200


def test_the_token_estimate_of_embeddings_counts_token_ids() -> None:
    assert estimate_tokens("embeddings", {"input": [[1, 2, 3], [4]]}, 100) == 4


@pytest.mark.parametrize(
    ("micros", "written"),
    [
        (0, "0s"),
        (20_000, "20ms"),
        (1_500_000, "1.5s"),
        (360_000_000, "6m0s"),
        (3_600_000_000, "1h0m0s"),
    ],
)
def test_reset_times_are_written_the_way_openai_writes_them(
    micros: int, written: str
) -> None:
    assert duration(micros) == written
