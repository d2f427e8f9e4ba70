"""What a request costs, in integer micro-USD (millionths of a US dollar).

A target's price comes from the gateway config when it gives one (the target's
``price``, else its route's), otherwise from the price list packaged with
``genai-prices``, looked up for the target's upstream model and provider (by
the provider's ``base_url``, then its name, then its kind).  The packaged list
is read from the installed package only: sluicegate never asks the network for
updated prices, so a deployment's costs change only when it upgrades.

Money is never a float: prices are :class:`~decimal.Decimal` and costs are
rounded to whole micro-USD, half up for what was really used and up for
estimates, so an estimate is never below the cost it stands for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Protocol

import genai_prices

from sluicegate.core.context import Usage
from sluicegate.core.gateway_config import GatewayConfig, Price, Target

log = logging.getLogger(__name__)

MICROS_PER_USD = Decimal(1_000_000)


class Pricer(Protocol):
    """The price of one target."""

    @property
    def source(self) -> str:
        """Where the price comes from, for messages: the config or the list."""
        ...

    def cost(self, usage: Usage) -> Decimal:
        """The exact cost of ``usage`` in micro-USD (fractions kept)."""
        ...


@dataclass(frozen=True)
class ConfiguredPrice:
    """A price from the gateway config, per million tokens."""

    price: Price
    source: str = "the gateway config"

    def cost(self, usage: Usage) -> Decimal:
        # USD per million tokens times tokens is micro-USD.
        cached_rate = self.price.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = self.price.input_per_mtok
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        return (
            (usage.prompt_tokens - cached) * self.price.input_per_mtok
            + cached * cached_rate
            + usage.completion_tokens * self.price.output_per_mtok
        )


@dataclass(frozen=True)
class ListedPrice:
    """A price from the packaged genai-prices list."""

    model: str
    provider_id: str | None
    provider_api_url: str | None
    source: str = "the genai-prices list"

    def cost(self, usage: Usage) -> Decimal:
        listed = genai_prices.Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=min(usage.cached_tokens, usage.prompt_tokens),
            output_tokens=usage.completion_tokens,
        )
        if self.provider_api_url is not None:
            calculation = genai_prices.calc_price(
                listed, self.model, provider_api_url=self.provider_api_url
            )
        else:
            calculation = genai_prices.calc_price(
                listed, self.model, provider_id=self.provider_id
            )
        total: Decimal = calculation.total_price
        return total * MICROS_PER_USD


def micros(cost: Decimal, *, estimate: bool = False) -> int:
    """Whole micro-USD: rounded up for an estimate, half up otherwise."""
    rounding = ROUND_CEILING if estimate else ROUND_HALF_UP
    return int(cost.to_integral_value(rounding=rounding))


class PriceBook:
    """Prices of the configured targets, looked up once each."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._found: dict[str, Pricer | None] = {}

    def for_target(self, public_model: str, target: Target) -> Pricer | None:
        """The price of ``target`` of ``public_model``'s route; None if unknown."""
        key = f"{public_model}\0{target.name}"
        if key not in self._found:
            self._found[key] = self._find(public_model, target)
        return self._found[key]

    def for_target_name(self, public_model: str, target_name: str) -> Pricer | None:
        """The price of the target called ``provider/model`` of a route."""
        route = self.config.models.get(public_model)
        for target in route.targets if route is not None else []:
            if target.name == target_name:
                return self.for_target(public_model, target)
        return None

    def unpriced(self, public_model: str) -> list[str]:
        """The targets of ``public_model`` whose price is unknown."""
        route = self.config.models.get(public_model)
        targets = route.targets if route is not None else []
        return [t.name for t in targets if self.for_target(public_model, t) is None]

    def _find(self, public_model: str, target: Target) -> Pricer | None:
        route = self.config.models.get(public_model)
        configured = target.price or (route.price if route is not None else None)
        if configured is not None:
            return ConfiguredPrice(configured)
        return self._listed(target)

    def _listed(self, target: Target) -> Pricer | None:
        provider = self.config.providers.get(target.provider)
        if provider is None:
            return None
        candidates: list[tuple[str | None, str | None]] = []
        if provider.base_url:
            candidates.append((None, provider.base_url))
        candidates += [(target.provider, None), (provider.kind, None)]
        for provider_id, api_url in candidates:
            listed = ListedPrice(target.model, provider_id, api_url)
            try:
                listed.cost(Usage(1, 1, 0))
            except LookupError:
                continue
            return listed
        log.info("no price is known for target %s", target.name)
        return None
