"""Pipeline files: one YAML per workspace, validated into typed stage configs.

A file is a mapping with one key, ``stages``: an ordered list of entries, each
with a ``type`` (a registered stage type), an optional ``id`` and
``on_failure``, and that type's own settings.  :func:`parse_pipeline` validates
every entry against its type's ``Config`` and reports every problem at once,
each with the file, the field path, what arrived and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sluicegate.core.errors import ConfigError, Problem
from sluicegate.core.stage import Stage, StageConfig
from sluicegate.core.validation import problems_of

DEFAULT_PIPELINE = "default"


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline file: stage types and their configs, in order."""

    source: str
    stages: tuple[tuple[type[Stage], StageConfig], ...]


def read_pipeline(path: Path, stage_types: dict[str, type[Stage]]) -> PipelineSpec:
    """Read and validate one pipeline file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            [Problem(str(path), "", f"{type(exc).__name__}: {exc}", "a readable file")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            [Problem(str(path), "", f"invalid YAML: {exc}", "a YAML mapping")]
        ) from exc
    return parse_pipeline(raw, stage_types, source=str(path))


def parse_pipeline(
    raw: Any, stage_types: dict[str, type[Stage]], *, source: str
) -> PipelineSpec:
    """Validate a parsed pipeline document; raise ConfigError listing problems."""
    entries = _stage_entries(raw, source)
    problems: list[Problem] = []
    stages: list[tuple[type[Stage], StageConfig]] = []

    for index, entry in enumerate(entries):
        typed = _stage(entry, index, stage_types, source, problems)
        if typed is not None:
            stages.append(typed)

    if not problems:
        problems = _whole_pipeline_problems(stages, source)
    if problems:
        raise ConfigError(problems)
    return PipelineSpec(source, tuple(stages))


def _stage_entries(raw: Any, source: str) -> list[Any]:
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError([Problem(source, "", got, "a mapping with a 'stages' list")])
    unknown = sorted(set(raw) - {"stages"})
    if unknown:
        raise ConfigError(
            [Problem(source, unknown[0], "an unknown key", "the only key is 'stages'")]
        )
    entries = raw.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            [Problem(source, "stages", repr(entries), "a non-empty list of stages")]
        )
    return entries


def _stage(
    entry: Any,
    index: int,
    stage_types: dict[str, type[Stage]],
    source: str,
    problems: list[Problem],
) -> tuple[type[Stage], StageConfig] | None:
    path = f"stages.{index}"
    kind = entry.get("type") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or kind not in stage_types:
        got = repr(kind) if isinstance(entry, dict) else type(entry).__name__
        problems.append(
            Problem(
                source,
                f"{path}.type",
                got,
                f"one of the installed stage types {sorted(stage_types)}",
            )
        )
        return None
    stage_type = stage_types[kind]
    try:
        return stage_type, stage_type.Config.model_validate(entry)
    except ValidationError as exc:
        problems.extend(problems_of(exc, source, prefix=path))
        return None


def _whole_pipeline_problems(
    stages: list[tuple[type[Stage], StageConfig]], source: str
) -> list[Problem]:
    problems = []
    ids = [config.id or config.type for _, config in stages]
    for index, stage_id in enumerate(ids):
        if stage_id in ids[:index]:
            problems.append(
                Problem(
                    source,
                    f"stages.{index}",
                    f"a second stage {stage_id!r}",
                    "each stage appears once; give repeats distinct 'id's",
                )
            )
    for index, (stage_type, _) in enumerate(stages):
        if stage_type.must_be_first and index != 0:
            problems.append(
                Problem(
                    source,
                    f"stages.{index}.type",
                    repr(stage_type.type_name),
                    "this stage must be the first of its pipeline, so that "
                    "its after step sees every request, denied ones too",
                )
            )
    producers = [t.type_name for t, _ in stages if t.produces_response]
    if len(producers) != 1:
        problems.append(
            Problem(
                source,
                "stages",
                f"{len(producers)} response stages {producers}",
                "exactly one stage that calls the provider (e.g. 'route')",
            )
        )
    return problems


def pipeline_file(directory: Path, workspace: str) -> Path | None:
    """``<workspace>.yaml`` in ``directory``, else ``default.yaml``, else None."""
    for name in (workspace, DEFAULT_PIPELINE):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    return None
