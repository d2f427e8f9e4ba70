"""The one exception tree of sluicegate.

Every error the project raises on purpose derives from :class:`SluicegateError`::

    SluicegateError
    ├── ConfigError          settings, gateway config or a pipeline file is invalid
    ├── PluginError          a plugin failed to load or declares a hook wrongly
    ├── StorageError         the database refused or could not be reached
    ├── InfrastructureError  a backing service (Redis, the DB) failed inside a stage;
    │                        the stage's ``on_failure`` decides what happens next
    ├── ProviderError        an upstream provider failed (status, reset, timeout)
    └── GatewayError         a request ends with an HTTP error the client sees;
        ├── InvalidRequest        400 invalid_request
        ├── InvalidApiKey         401 invalid_api_key
        ├── BudgetExceeded        402 budget_exceeded
        ├── ModelNotAllowed       403 model_not_allowed
        ├── ModelNotFound         404 model_not_found
        ├── RequestTooLarge       413 request_too_large
        ├── HeadersTooLarge       431 headers_too_large
        ├── RateLimitExceeded     429 rate_limit_exceeded
        ├── UpstreamFailed        502 upstream_error
        ├── UpstreamUnavailable   503 upstream_unavailable
        ├── ServiceUnavailable    503 service_unavailable (a stage's backing
        │                         service is down and it fails closed)
        └── UpstreamTimeout       504 upstream_timeout

Messages say what arrived, what is allowed and how to fix it; causes are chained
with ``raise ... from exc``.  A stage denial is not an exception: it is a typed
:class:`~sluicegate.core.stage.Deny` returned by the stage's before step, which
the runner turns into a :class:`GatewayError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class SluicegateError(Exception):
    """Base of every error sluicegate raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration input.

    ``where`` names the source (a file or an environment variable), ``path`` the
    field inside it (``stages.2.limits.0.per``), ``got`` what arrived and
    ``allowed`` what would have been accepted.
    """

    where: str
    path: str
    got: str
    allowed: str

    def __str__(self) -> str:
        location = f"{self.where}: {self.path}" if self.path else self.where
        return f"{location}: got {self.got}; {self.allowed}"


class ConfigError(SluicegateError):
    """Settings, the gateway config or a pipeline file is invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class PluginError(SluicegateError):
    """A plugin failed to import, or declares a hook or a registration wrongly."""

    def __init__(self, plugin: str, problem: str, hook: str | None = None) -> None:
        self.plugin = plugin
        self.hook = hook
        self.problem = problem
        where = f"plugin {plugin!r}" + (f", hook {hook!r}" if hook else "")
        super().__init__(f"{where}: {problem}")


class StorageError(SluicegateError):
    """The database refused an operation or could not be reached."""


class InfrastructureError(SluicegateError):
    """A backing service failed inside a stage (Redis or DB down, a timeout).

    Not a denial: the stage's ``on_failure`` (``open`` or ``closed``) decides.
    """

    def __init__(self, service: str, message: str) -> None:
        self.service = service
        super().__init__(f"{service}: {message}")


class ProviderError(SluicegateError):
    """An upstream provider call failed.

    ``status`` is the upstream HTTP status (``None`` for connect errors, resets
    and timeouts); ``retryable`` says whether another attempt may succeed;
    ``retry_after`` is the delay in seconds the provider asked for, if any.
    """

    def __init__(
        self,
        target: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        timeout: bool = False,
        body: bytes = b"",
    ) -> None:
        self.target = target
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.timeout = timeout
        self.body = body
        super().__init__(f"{target}: {message}")


class GatewayError(SluicegateError):
    """A request ends with this HTTP status, error code and message.

    Subclasses fix ``status``, ``code`` and ``error_type`` (the OpenAI error
    ``type``); ``headers`` are added to the error response (``Retry-After``).
    """

    status: int = 500
    code: str = "internal_error"
    error_type: str = "server_error"

    def __init__(
        self,
        message: str,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        self.param = param
        self.denied_by: str | None = None
        """The stage whose before step denied the request, if a stage did."""
        super().__init__(message)


class InvalidRequest(GatewayError):
    status, code, error_type = 400, "invalid_request", "invalid_request_error"


class InvalidApiKey(GatewayError):
    status, code, error_type = 401, "invalid_api_key", "authentication_error"


class BudgetExceeded(GatewayError):
    status, code, error_type = 402, "budget_exceeded", "insufficient_quota"


class ModelNotAllowed(GatewayError):
    status, code, error_type = 403, "model_not_allowed", "permission_error"


class ModelNotFound(GatewayError):
    status, code, error_type = 404, "model_not_found", "invalid_request_error"


class RequestTooLarge(GatewayError):
    status, code, error_type = 413, "request_too_large", "invalid_request_error"


class HeadersTooLarge(GatewayError):
    status, code, error_type = 431, "headers_too_large", "invalid_request_error"


class RateLimitExceeded(GatewayError):
    status, code, error_type = 429, "rate_limit_exceeded", "rate_limit_error"


class UpstreamFailed(GatewayError):
    status, code, error_type = 502, "upstream_error", "api_error"


class UpstreamUnavailable(GatewayError):
    status, code, error_type = 503, "upstream_unavailable", "api_error"


class ServiceUnavailable(GatewayError):
    """A service a stage needs (Redis, the DB) is down and it fails closed."""

    status, code, error_type = 503, "service_unavailable", "api_error"


class UpstreamTimeout(GatewayError):
    status, code, error_type = 504, "upstream_timeout", "api_error"


def error_for(status: int, code: str, message: str) -> GatewayError:
    """The :class:`GatewayError` of ``status`` and ``code`` (a plain one if none)."""
    for cls in GatewayError.__subclasses__():
        if cls.status == status and cls.code == code:
            return cls(message)
    error = GatewayError(message)
    error.status, error.code = status, code
    error.error_type = "invalid_request_error" if status < 500 else "api_error"
    return error
