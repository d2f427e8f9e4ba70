"""The plugin manager: built-ins and entry-point plugins, one registry each.

The app owns its :class:`pluggy.PluginManager` (built by :func:`build_manager`);
nothing here is a module global.  Built-in stages, providers and evaluators are
registered exactly like third-party plugins, which come from the entry-point
group ``sluicegate``, limited by the ``SLUICEGATE_PLUGINS`` allow-list and the
``SLUICEGATE_PLUGINS_AUTOLOAD`` switch.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

import pluggy

from sluicegate.core import hookspecs
from sluicegate.core.errors import PluginError
from sluicegate.core.evaluator import Evaluator
from sluicegate.core.provider import Provider
from sluicegate.core.settings import Settings
from sluicegate.core.stage import Stage

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sluicegate"
BUILTIN_PLUGINS = (
    "sluicegate.core.auth",
    "sluicegate.core.budgets.lifecycle",
    "sluicegate.stages",
    "sluicegate.providers",
    "sluicegate.evaluators",
)

T = TypeVar("T")


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin the manager holds, for ``sluicegate plugins``."""

    name: str
    version: str
    builtin: bool


@dataclass
class Registry:
    """What the plugins add, by the name a user writes in YAML."""

    stage_types: dict[str, type[Stage]] = field(default_factory=dict)
    provider_kinds: dict[str, type[Provider]] = field(default_factory=dict)
    evaluators: dict[str, type[Evaluator]] = field(default_factory=dict)
    plugins: list[LoadedPlugin] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    """``stage:<name>`` / ``provider:<name>`` / ``evaluator:<name>`` → plugin."""


def build_manager(settings: Settings) -> tuple[pluggy.PluginManager, Registry]:
    """Create the manager, register built-ins and allowed entry points."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    loaded: list[LoadedPlugin] = []

    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        _register(manager, module, module_name)
        loaded.append(LoadedPlugin(module_name, _own_version(), builtin=True))

    if settings.plugins_autoload:
        for entry_point in _allowed(entry_points(group=ENTRY_POINT_GROUP), settings):
            plugin = _load(entry_point)
            _register(manager, plugin, entry_point.name)
            version = entry_point.dist.version if entry_point.dist else "unknown"
            loaded.append(LoadedPlugin(entry_point.name, version, builtin=False))

    _check_hook_names(manager)
    registry = collect(manager)
    registry.plugins = loaded
    return manager, registry


def _allowed(found: Iterable[EntryPoint], settings: Settings) -> list[EntryPoint]:
    found = list(found)
    if settings.plugins is None:
        return found
    names = {entry_point.name for entry_point in found}
    missing = sorted(set(settings.plugins) - names)
    if missing:
        raise PluginError(
            ", ".join(missing),
            "is in SLUICEGATE_PLUGINS but no installed distribution declares it "
            f"in the {ENTRY_POINT_GROUP!r} entry-point group; installed: "
            f"{sorted(names) or 'none'}",
        )
    return [
        entry_point for entry_point in found if entry_point.name in settings.plugins
    ]


def _load(entry_point: EntryPoint) -> object:
    try:
        return entry_point.load()
    except Exception as exc:
        raise PluginError(
            entry_point.name,
            f"failed to import {entry_point.value!r}: {type(exc).__name__}: {exc}",
        ) from exc


def _register(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(name, _reason(exc), hook=_hook_of(exc)) from exc
    except ValueError as exc:
        raise PluginError(name, f"cannot be registered: {exc}") from exc


def _check_hook_names(manager: pluggy.PluginManager) -> None:
    """Refuse implementations of hooks that do not exist (a misspelt name)."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(
            plugin,
            f"{_reason(exc)}; the hooks are listed in sluicegate.core.hookspecs",
            hook=_hook_of(exc),
        ) from exc


def _hook_of(exc: pluggy.PluginValidationError) -> str | None:
    found = re.search(r"hook '?([a-z_]+)'?", str(exc))
    return found.group(1) if found else None


def _reason(exc: pluggy.PluginValidationError) -> str:
    return " ".join(str(exc).split())


def collect(manager: pluggy.PluginManager) -> Registry:
    """Ask every plugin for its stage types, provider kinds and evaluators."""
    registry = Registry()
    hook = manager.hook
    _gather(
        manager,
        hook.sluicegate_stage_types,
        "stage",
        "type_name",
        Stage,
        registry.stage_types,
        registry.owners,
    )
    _gather(
        manager,
        hook.sluicegate_provider_kinds,
        "provider",
        "kind_name",
        Provider,
        registry.provider_kinds,
        registry.owners,
    )
    _gather(
        manager,
        hook.sluicegate_evaluators,
        "evaluator",
        "name",
        Evaluator,
        registry.evaluators,
        registry.owners,
    )
    return registry


def _gather(
    manager: pluggy.PluginManager,
    caller: Any,
    what: str,
    name_attr: str,
    base: type[Any],
    into: dict[str, Any],
    owners: dict[str, str],
) -> None:
    for impl in caller.get_hookimpls():
        plugin_name = manager.get_name(impl.plugin) or repr(impl.plugin)
        hook_name = caller.name
        result = impl.function()
        if not isinstance(result, list | tuple):
            raise PluginError(
                plugin_name,
                f"must return a list, returned {type(result).__name__}",
                hook=hook_name,
            )
        for item in result:
            name = _checked(item, base, name_attr, plugin_name, hook_name)
            key = f"{what}:{name}"
            if key in owners:
                raise PluginError(
                    plugin_name,
                    f"{what} {name!r} is already registered by {owners[key]!r}",
                    hook=hook_name,
                )
            owners[key] = plugin_name
            into[name] = item


def _checked(item: Any, base: type[Any], name_attr: str, plugin: str, hook: str) -> str:
    if not inspect.isclass(item) or not issubclass(item, base):
        raise PluginError(
            plugin,
            f"returned {item!r}; each item must be a {base.__name__} subclass",
            hook=hook,
        )
    name = getattr(item, name_attr, None)
    if not isinstance(name, str) or not name:
        raise PluginError(
            plugin,
            f"{item.__name__} has no {name_attr} (a non-empty string)",
            hook=hook,
        )
    return name


async def first_result(caller: Any, **kwargs: Any) -> Any:
    """Call a ``firstresult`` hook whose implementations may be async.

    pluggy would stop at the first implementation returning an awaitable, so
    implementations are called here in pluggy's order, each awaited, until one
    returns something other than None.
    """
    for impl in reversed(caller.get_hookimpls()):
        value = await resolve(impl.function(*[kwargs[arg] for arg in impl.argnames]))
        if value is not None:
            return value
    return None


async def resolve(value: T | Any) -> Any:
    """Await ``value`` if a hook implementation returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


def _own_version() -> str:
    from sluicegate.core import __version__

    return __version__
