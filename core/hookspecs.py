# mypy: disable-error-code="empty-body"
# (hook specifications are signatures only: pluggy never calls their bodies)
"""Every hook a sluicegate plugin can implement.

A plugin is a module or object with functions decorated by :data:`hookimpl`,
registered under the entry-point group ``sluicegate`` (built-in stages and
providers register through the same manager).  pluggy calls hooks
synchronously: an implementation may return a value, or an awaitable where the
hook's documentation says so, and the gateway awaits it
(:func:`sluicegate.core.plugins.resolve`).  That rule holds for every hook here.

Registration hooks (``*_types``, ``*_kinds``, ``*_evaluators``) are called
once at start and collect a list from every plugin; two plugins registering
the same name is a :class:`~sluicegate.core.errors.PluginError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sluicegate.core.context import Principal, RequestContext
    from sluicegate.core.evaluator import Evaluator
    from sluicegate.core.provider import Provider
    from sluicegate.core.services import Services
    from sluicegate.core.stage import Stage

PROJECT = "sluicegate"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sluicegate_stage_types() -> list[type[Stage]]:
    """Return the stage types this plugin adds.

    Called once at start.  Each is a :class:`~sluicegate.core.stage.Stage`
    subclass with a unique ``type_name`` (the ``type:`` of a pipeline entry)
    and a ``Config`` model.  Results of all plugins are concatenated.
    """


@hookspec
def sluicegate_provider_kinds() -> list[type[Provider]]:
    """Return the provider kinds this plugin adds.

    Called once at start.  Each is a :class:`~sluicegate.core.provider.Provider`
    subclass with a unique ``kind_name`` (the ``kind:`` of a provider entry in
    the gateway config) and a ``Config`` model.  Results are concatenated.
    """


@hookspec
def sluicegate_evaluators() -> list[type[Evaluator]]:
    """Return the evaluators this plugin adds.

    Called once at start.  Each is an
    :class:`~sluicegate.core.evaluator.Evaluator` subclass with a unique
    ``name`` (what pipeline files and ``sluicegate evals`` use), a ``version``
    and a ``Config`` model.  Results are concatenated.
    """


@hookspec(firstresult=True)
def sluicegate_authenticate(
    headers: Mapping[str, str], services: Services
) -> Principal | Awaitable[Principal | None] | None:
    """Identify the caller of a proxied request from its headers.

    Called for every request before its pipeline is chosen (the principal names
    the workspace).  Return a :class:`~sluicegate.core.context.Principal`, or
    ``None`` when this plugin does not recognise the credentials; the first
    non-None result wins, and the built-in API-key check runs last.  Raise
    :class:`~sluicegate.core.errors.InvalidApiKey` to refuse outright.  May
    return an awaitable.
    """


@hookspec
def sluicegate_startup(services: Services) -> Awaitable[None] | None:
    """Run once when a gateway or worker process has started its services.

    The return value is ignored; an awaitable is awaited before traffic is
    served.  Every plugin's implementation runs.
    """


@hookspec
def sluicegate_shutdown(services: Services) -> Awaitable[None] | None:
    """Run once when a process stops, before its services close.

    Every plugin's implementation runs; the return value is ignored, an
    awaitable is awaited.
    """


@hookspec
def sluicegate_request_completed(ctx: RequestContext) -> Awaitable[None] | None:
    """Observe a request after every after-step has run.

    ``ctx.outcome`` tells how it ended.  Every plugin's implementation runs;
    the return value is ignored, an awaitable is awaited.  An exception is
    logged and never reaches the client.  Keep it fast: it runs on the
    request's task.
    """
