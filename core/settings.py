"""Settings read from the environment (DESIGN §3), validated at start.

A bad value stops the process with the variable's name, what arrived and what
is allowed (:class:`~sluicegate.core.errors.ConfigError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, IPvAnyNetwork, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sluicegate.core.errors import ConfigError, Problem

ENV_PREFIX = "SLUICEGATE_"
DEFAULT_CONFIG_FILE = "sluicegate.yaml"


class Settings(BaseSettings):
    """Every setting of a sluicegate process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///sluicegate.db"
    redis_url: str | None = None
    redis_prefix: str = Field(default="sluicegate", pattern=r"^[A-Za-z0-9:_-]{1,64}$")
    """Prefix of every Redis key, so deployments can share one server."""
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    """How long one Redis call may take before it counts as a failure."""
    config: Path | None = None
    pipelines_dir: Path = Path("pipelines")
    spool_dir: Path = Path("spool")
    """Where audit records wait (fsync'd) while the database is unreachable."""
    admin_token: str | None = None
    sentry_dsn: str | None = Field(default=None, validation_alias="SENTRY_DSN")

    plugins: Annotated[list[str] | None, NoDecode] = None
    """Allow-list of entry-point plugin names; unset loads every one found."""
    plugins_autoload: bool = True
    """False: load no entry-point plugin at all (built-ins still load)."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    pipeline_reload_seconds: float = Field(default=1.0, ge=0)
    """How often pipeline files are checked for changes; 0 turns reload off."""
    key_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a verified API key is trusted before it is looked up again."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    drain_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long in-flight requests and streams may take to finish
    before they are cancelled (after-steps still run) and the process exits."""
    drain_notice_seconds: float = Field(default=0.0, ge=0)
    """On SIGTERM: how long /readyz answers 503 ``draining`` while new
    connections are still accepted, so a load balancer can take the process
    out before it stops accepting."""

    breaker_window_seconds: int = Field(default=30, ge=1, le=3600)
    """Length of the sliding window a target's failure rate is taken over."""
    breaker_minimum_calls: int = Field(default=10, ge=1)
    """Calls the window must hold before a breaker may open."""
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_seconds: float = Field(default=30.0, gt=0)
    """Time to first byte above which a call counts as slow."""
    breaker_slow_call_rate: float = Field(default=1.0, gt=0, le=1)
    breaker_cooldown_seconds: float = Field(default=15.0, gt=0)
    """How long an open breaker skips its target before a half-open probe."""
    breaker_half_open_probes: int = Field(default=1, ge=1, le=100)
    """Probes in flight at once while half-open; as many successes close it."""
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=10)
    """Retries allowed per request, averaged (0.2: one in five requests)."""
    retry_budget_minimum_per_second: float = Field(default=5.0, ge=0)
    """Retries a second always allowed, however thin the traffic."""
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list
    )
    """Networks (comma-separated CIDRs) of proxies whose X-Forwarded-For is
    believed; unset: the client IP is the socket peer."""
    gateway_processes: int = Field(default=1, ge=1)
    """Gateway processes sharing one Redis; while Redis is down a fail-open
    rate limit allows each process the configured limit divided by this."""
    eval_requeue_seconds: float = Field(default=10.0, gt=0, le=3600)
    """How often evaluation jobs deferred while the queue was unreachable are
    handed to the queue again."""
    eval_worker_concurrency: int = Field(default=10, ge=1, le=1000)
    """Evaluation jobs one ``sluicegate worker`` process runs at once."""

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [network.strip() for network in value.split(",") if network.strip()]
        return value

    @field_validator("plugins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        schemes = ("sqlite:///", "postgresql://", "postgres://")
        if not value.startswith(schemes):
            raise ValueError(
                "must start with sqlite:/// (a file path follows) or "
                "postgresql:// (user, host, port and database follow)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:///")

    @property
    def config_path(self) -> Path | None:
        """The gateway config file: the setting, else ``sluicegate.yaml`` if any."""
        if self.config is not None:
            return self.config
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [_problem_of(error) for error in exc.errors()]
        raise ConfigError(problems) from exc


def _problem_of(error: Any) -> Problem:
    field_name = str(error["loc"][0]) if error["loc"] else ""
    variable = (
        "SENTRY_DSN" if field_name == "SENTRY_DSN" else ENV_PREFIX + field_name.upper()
    )
    got = os.environ.get(variable, repr(error.get("input")))
    return Problem(
        where="environment",
        path=variable,
        got=repr(got),
        allowed=str(error["msg"]).removeprefix("Value error, "),
    )
