"""sluicegate's core: settings, plugins, pipelines, the HTTP app and the CLI.

Plugin authors import :data:`hookimpl` from here.
"""

from sluicegate.core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
