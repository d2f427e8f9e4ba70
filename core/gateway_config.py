"""The gateway config (``SLUICEGATE_CONFIG``): providers and public model names.

With no file, the gateway serves only the offline provider (model
``sluicegate-offline``), so a newcomer has a working gateway with no key.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.provider import Provider, ProviderConfig
from sluicegate.core.validation import problems_of

OFFLINE_MODEL = "sluicegate-offline"


class Price(BaseModel):
    """What one upstream model costs, in US dollars per million tokens.

    Given in the gateway config for models the packaged price list does not
    know (self-hosted or private ones), or to override it.  Cached input
    tokens cost ``cached_input_per_mtok``, by default the input price.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)


class Target(BaseModel):
    """One provider and upstream model a route may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    weight: float = Field(default=1.0, gt=0)
    price: Price | None = Field(
        default=None,
        description="This target's price; overrides the route's and the "
        "packaged price list.",
    )

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


class ModelRoute(BaseModel):
    """A public model name and the targets that serve it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(min_length=1)
    strategy: str = Field(
        default="fallback",
        pattern="^(fallback|weighted)$",
        description="fallback: in order; weighted: by weight, then the rest.",
    )
    price: Price | None = Field(
        default=None,
        description="The price of every target without a price of its own.",
    )


class GatewayConfig(BaseModel):
    """Providers by name and routes by public model name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelRoute] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _targets_name_providers(self) -> GatewayConfig:
        for public, route in self.models.items():
            for index, target in enumerate(route.targets):
                if target.provider not in self.providers:
                    raise ValueError(
                        f"models.{public}.targets.{index}.provider: "
                        f"{target.provider!r} is not a configured provider; "
                        f"configured: {sorted(self.providers)}"
                    )
        return self


def default_config(kinds: dict[str, type[Provider]]) -> GatewayConfig:
    """The config used when no file is given: the offline provider only."""
    return parse_config(
        {
            "providers": {"offline": {"kind": "offline"}},
            "models": {
                OFFLINE_MODEL: {"targets": [{"provider": "offline", "model": "echo"}]}
            },
        },
        kinds,
        source="built-in default config",
    )


def load_config(path: Path | None, kinds: dict[str, type[Provider]]) -> GatewayConfig:
    """Read and validate the gateway config file (the default if ``None``)."""
    if path is None:
        return default_config(kinds)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"{type(exc).__name__}: {exc}",
                    "a readable YAML file",
                )
            ]
        ) from exc
    return parse_config(raw or {}, kinds, source=str(path))


def parse_config(
    raw: Any, kinds: dict[str, type[Provider]], *, source: str
) -> GatewayConfig:
    """Validate ``raw``; each provider entry against its kind's Config."""
    if not isinstance(raw, dict):
        raise ConfigError([Problem(source, "", type(raw).__name__, "a mapping")])
    providers = raw.get("providers") or {}
    problems: list[Problem] = []
    typed: dict[str, Any] = {}
    for name, entry in providers.items() if isinstance(providers, dict) else []:
        typed[name] = _provider_config(name, entry, kinds, source, problems)
    if problems:
        raise ConfigError(problems)
    try:
        return GatewayConfig.model_validate({**raw, "providers": typed})
    except ValidationError as exc:
        raise ConfigError(problems_of(exc, source)) from exc


def _provider_config(
    name: str,
    entry: Any,
    kinds: dict[str, type[Provider]],
    source: str,
    problems: list[Problem],
) -> ProviderConfig | None:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind not in kinds:
        problems.append(
            Problem(
                source,
                f"providers.{name}.kind",
                repr(kind),
                f"one of the installed provider kinds {sorted(kinds)}",
            )
        )
        return None
    try:
        return kinds[kind].Config.model_validate(entry)
    except ValidationError as exc:
        problems.extend(problems_of(exc, source, prefix=f"providers.{name}"))
        return None
