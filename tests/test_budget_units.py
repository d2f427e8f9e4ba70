"""Budget building blocks: windows, estimates, prices, limits, the usage filter."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from sluicegate.core.budgets.estimate import (
    ensure_output_cap,
    estimate,
    output_cap,
    text_tokens,
)
from sluicegate.core.budgets.limits import BudgetLimit, counters
from sluicegate.core.budgets.prices import PriceBook, micros
from sluicegate.core.budgets.stream import WithoutUsageEvent, is_usage_event
from sluicegate.core.budgets.windows import window_at
from sluicegate.core.context import Principal, Usage
from sluicegate.core.gateway_config import GatewayConfig


def config(price: dict[str, Any] | None = None, model: str = "gpt-4o-mini") -> Any:
    target: dict[str, Any] = {"provider": "openai", "model": model}
    if price is not None:
        target["price"] = price
    return GatewayConfig.model_validate(
        {
            "providers": {"openai": {"kind": "openai"}},
            "models": {"public": {"targets": [target]}},
        }
    )


# -- windows -------------------------------------------------------------------


def test_a_utc_day_runs_from_midnight_to_midnight() -> None:
    window = window_at(datetime(2026, 12, 3, 15, 30, tzinfo=UTC), "day")
    assert window.start == datetime(2026, 12, 3, tzinfo=UTC)
    assert window.end == datetime(2026, 12, 4, tzinfo=UTC)
    assert window.label == "2026-12-03"


def test_a_december_month_resets_on_the_first_of_january() -> None:
    window = window_at(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "month")
    assert window.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert window.label == "2026-12"


def test_a_time_zone_day_follows_local_midnight() -> None:
    # 23:30 UTC on 3 December is already 4 December in Berlin (UTC+1).
    window = window_at(
        datetime(2026, 12, 3, 23, 30, tzinfo=UTC), "day", "Europe/Berlin"
    )
    assert window.label == "2026-12-04"
    assert window.start == datetime(2026, 12, 3, 23, tzinfo=UTC)
    assert window.end == datetime(2026, 12, 4, 23, tzinfo=UTC)


def test_a_day_with_a_clock_change_lasts_23_hours() -> None:
    window = window_at(datetime(2026, 3, 29, 12, tzinfo=UTC), "day", "Europe/Berlin")
    assert (window.end - window.start).total_seconds() == 23 * 3600


# -- estimates -----------------------------------------------------------------


def test_ascii_text_counts_a_token_per_three_characters() -> None:
    assert text_tokens("abcdefg") == 3


def test_non_ascii_characters_count_a_token_each() -> None:
    assert text_tokens("日本語") == 3


def test_the_estimate_adds_framing_per_message_and_the_output_cap() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    # 3 priming + 4 framing + "user" 2 + "hi" 1; output 5
    assert estimate("chat.completions", body).prompt_tokens == 10
    assert estimate("chat.completions", body).completion_tokens == 5


def test_an_image_part_counts_the_configured_tokens() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    body = {"messages": [{"role": "user", "content": [image]}]}
    assert estimate("chat.completions", body, image_tokens=1000).prompt_tokens == 1009


def test_tools_count_as_their_json() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    with_tools = {**plain, "tools": tools}
    extra = (
        estimate("chat.completions", with_tools).prompt_tokens
        - estimate("chat.completions", plain).prompt_tokens
    )
    assert extra > 10


def test_the_output_cap_multiplies_by_n() -> None:
    assert output_cap({"max_completion_tokens": 100, "n": 3}) == 300


def test_a_request_without_a_cap_gets_the_default() -> None:
    body: dict[str, Any] = {"messages": []}
    assert ensure_output_cap(body, 4096, "max_completion_tokens") is True
    assert body["max_completion_tokens"] == 4096


def test_a_client_cap_is_kept() -> None:
    body: dict[str, Any] = {"messages": [], "max_tokens": 7}
    assert ensure_output_cap(body, 4096, "max_completion_tokens") is False
    assert "max_completion_tokens" not in body


def test_embedding_token_arrays_count_exactly() -> None:
    assert estimate("embeddings", {"input": [[1, 2, 3], [4]]}).prompt_tokens == 4


# -- prices --------------------------------------------------------------------


def test_a_configured_price_costs_tokens_times_price_per_million() -> None:
    book = PriceBook(config({"input_per_mtok": 0.5, "output_per_mtok": 1.5}))
    target = book.config.models["public"].targets[0]
    pricer = book.for_target("public", target)
    assert pricer is not None
    assert pricer.cost(Usage(1000, 100, 0)) == Decimal("650.0")


def test_cached_input_tokens_cost_the_cached_price() -> None:
    price = {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.25}
    book = PriceBook(config(price))
    pricer = book.for_target_name("public", "openai/gpt-4o-mini")
    assert pricer is not None
    assert pricer.cost(Usage(1000, 0, 400)) == Decimal("700.00")


def test_a_listed_model_is_priced_from_the_packaged_list() -> None:
    book = PriceBook(config())
    pricer = book.for_target_name("public", "openai/gpt-4o-mini")
    assert pricer is not None and pricer.source == "the genai-prices list"
    # $0.15 input and $0.60 output per million tokens
    assert micros(pricer.cost(Usage(1_000_000, 1_000_000, 0))) == 750_000


def test_an_unknown_model_has_no_price() -> None:
    book = PriceBook(config(model="my-private-model"))
    assert book.unpriced("public") == ["openai/my-private-model"]


def test_estimates_round_up_and_costs_round_half_up() -> None:
    assert micros(Decimal("10.2"), estimate=True) == 11
    assert micros(Decimal("10.5")) == 11
    assert micros(Decimal("10.49")) == 10


# -- limits --------------------------------------------------------------------


def test_a_limit_needs_exactly_one_amount() -> None:
    with pytest.raises(ValidationError, match="exactly one of usd and tokens"):
        BudgetLimit.model_validate(
            {"scope": "workspace", "usd": 1, "tokens": 5, "per": "day"}
        )


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        BudgetLimit.model_validate(
            {"scope": "workspace", "usd": 1, "per": "day", "timezone": "Mars/Base"}
        )


def test_an_api_key_limit_skips_a_principal_without_a_key() -> None:
    limits = [
        BudgetLimit.model_validate({"scope": "api_key", "tokens": 5, "per": "day"}),
        BudgetLimit.model_validate({"scope": "workspace", "usd": 2, "per": "month"}),
    ]
    found = counters(limits, Principal(7, "acme", None), datetime.now(UTC), "UTC")
    assert [(c.scope, c.limit) for c in found] == [("workspace", 2_000_000)]


# -- the usage event filter ----------------------------------------------------


USAGE_EVENT = (
    b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":2,"total_tokens":3}}\n\n'
)
CONTENT_EVENT = (
    b'data: {"id":"x","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
)


def test_the_usage_only_event_is_recognised() -> None:
    assert is_usage_event(USAGE_EVENT.strip())
    assert not is_usage_event(CONTENT_EVENT.strip())


@pytest.mark.anyio
async def test_the_filter_drops_the_usage_event_across_chunk_boundaries() -> None:
    whole = CONTENT_EVENT + USAGE_EVENT + b"data: [DONE]\n\n"
    chunks = [whole[i : i + 7] for i in range(0, len(whole), 7)]

    async def source() -> Any:
        for chunk in chunks:
            yield chunk

    relayed = b"".join([chunk async for chunk in WithoutUsageEvent(source())])
    assert relayed == CONTENT_EVENT + b"data: [DONE]\n\n"
