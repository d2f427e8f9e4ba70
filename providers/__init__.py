"""Built-in provider kinds, registered like any plugin's.

A provider kind lives in its own module here (``providers/<kind>.py``) and is
listed in :func:`sluicegate_provider_kinds`.
"""

from __future__ import annotations

from sluicegate.core.hookspecs import hookimpl
from sluicegate.core.provider import Provider


@hookimpl
def sluicegate_provider_kinds() -> list[type[Provider]]:
    from sluicegate.providers.anthropic import AnthropicProvider
    from sluicegate.providers.offline import OfflineProvider
    from sluicegate.providers.openai import OpenAIProvider

    return [OpenAIProvider, OfflineProvider, AnthropicProvider]
