"""The ASGI entry point Hypercorn loads: ``sluicegate.core.http.asgi:create_app()``."""

from sluicegate.core.http.app import create_app

__all__ = ["create_app"]
