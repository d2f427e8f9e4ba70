"""The pipelines of every workspace, built once and reloaded when files change.

Each ``*.yaml`` file of the pipelines directory is validated and built into a
:class:`~sluicegate.core.runner.Pipeline` at start (an invalid file stops the
start).  A workspace uses ``<workspace>.yaml``, else ``default.yaml``.  A task
polls the directory; a changed file is rebuilt and swapped in, an invalid
change keeps the last good pipeline and logs why.  A replaced pipeline is
closed once its last in-flight request has finished.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sluicegate.core.errors import ConfigError, GatewayError
from sluicegate.core.pipeline import DEFAULT_PIPELINE, parse_pipeline, read_pipeline
from sluicegate.core.runner import Pipeline
from sluicegate.core.services import Services

log = logging.getLogger(__name__)

BUILTIN_DEFAULT = {"stages": [{"type": "audit"}, {"type": "auth"}, {"type": "route"}]}
"""Used only when the pipelines directory does not exist at all."""


@dataclass
class _Loaded:
    pipeline: Pipeline
    mtime_ns: int


class PipelineStore:
    """Workspace name → pipeline, kept in step with the directory."""

    def __init__(self, directory: Path, services: Services) -> None:
        self.directory = directory
        self.services = services
        self._files: dict[str, _Loaded] = {}
        self._builtin: Pipeline | None = None

    def load(self) -> None:
        """Build every pipeline file; raise ConfigError listing all bad files."""
        if not self.directory.is_dir():
            log.warning(
                "pipelines directory %s does not exist; every workspace uses the "
                "built-in pipeline (audit, auth, route)",
                self.directory,
            )
            spec = parse_pipeline(
                BUILTIN_DEFAULT,
                self.services.registry.stage_types,
                source="built-in default pipeline",
            )
            self._builtin = Pipeline(spec, self.services)
            return
        problems = []
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                self._files[path.stem] = self._build(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

    def get(self, workspace: str) -> Pipeline:
        """The pipeline of ``workspace``; GatewayError if it has none."""
        loaded = self._files.get(workspace) or self._files.get(DEFAULT_PIPELINE)
        if loaded is not None:
            return loaded.pipeline
        if self._builtin is not None:
            return self._builtin
        raise GatewayError(
            f"workspace {workspace!r} has no pipeline: add {workspace}.yaml or "
            f"{DEFAULT_PIPELINE}.yaml to {self.directory}"
        )

    async def watch(self, interval: float) -> None:
        """Poll for changed, added and removed files until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()

    def refresh(self) -> None:
        """Pick up changes once."""
        if not self.directory.is_dir():
            return
        present = {path.stem: path for path in self.directory.glob("*.yaml")}
        for name, path in present.items():
            self._refresh_file(name, path)
        for name in set(self._files) - set(present):
            log.info("pipeline file %s.yaml was removed", name)
            self._files.pop(name).pipeline.retire()

    def _refresh_file(self, name: str, path: Path) -> None:
        known = self._files.get(name)
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            return
        if known is not None and known.mtime_ns == mtime_ns:
            return
        try:
            fresh = self._build(path, mtime_ns)
        except ConfigError as exc:
            if known is not None:
                known.mtime_ns = mtime_ns
            log.error(
                "pipeline %s is invalid; keeping the last good one:\n%s", path, exc
            )
            return
        self._files[name] = fresh
        log.info("pipeline %s reloaded", path)
        if known is not None:
            known.pipeline.retire()

    def _build(self, path: Path, mtime_ns: int | None = None) -> _Loaded:
        if mtime_ns is None:
            mtime_ns = path.stat().st_mtime_ns
        spec = read_pipeline(path, self.services.registry.stage_types)
        return _Loaded(Pipeline(spec, self.services), mtime_ns)

    async def close(self) -> None:
        for loaded in self._files.values():
            await loaded.pipeline.close()
        if self._builtin is not None:
            await self._builtin.close()
