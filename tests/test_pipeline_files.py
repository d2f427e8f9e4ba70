"""Pipeline files are validated whole, with the file, field path, value and rule."""

from pathlib import Path

import pytest

from sluicegate.core.errors import ConfigError
from sluicegate.core.pipeline import parse_pipeline, pipeline_file, read_pipeline
from sluicegate.core.plugins import build_manager
from sluicegate.core.settings import Settings
from sluicegate.stages.auth import AuthStage
from sluicegate.stages.route import RouteStage


@pytest.fixture(scope="module")
def stage_types() -> dict:
    _, registry = build_manager(Settings(plugins_autoload=False))
    return registry.stage_types


def problems(raw: object, stage_types: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(raw, stage_types, source="ws.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_a_valid_file_gives_typed_stages_in_declared_order(stage_types: dict) -> None:
    spec = parse_pipeline(
        {
            "stages": [
                {"type": "auth", "models": ["m"]},
                {"type": "route", "retries": 1},
            ]
        },
        stage_types,
        source="ws.yaml",
    )
    assert [stage_type for stage_type, _ in spec.stages] == [AuthStage, RouteStage]
    assert spec.stages[1][1].retries == 1  # type: ignore[attr-defined]


def test_an_unknown_stage_type_lists_the_installed_ones(stage_types: dict) -> None:
    found = problems({"stages": [{"type": "nope"}, {"type": "route"}]}, stage_types)
    assert found == [
        "ws.yaml: stages.0.type: got 'nope'; one of the installed stage types "
        f"{sorted(stage_types)}"
    ]


def test_a_wrong_value_names_its_field_path_and_the_rule(stage_types: dict) -> None:
    found = problems({"stages": [{"type": "route", "retries": -1}]}, stage_types)
    assert len(found) == 1
    assert found[0].startswith("ws.yaml: stages.0.retries: got -1;")
    assert "greater than or equal to 0" in found[0]


def test_a_misspelt_setting_is_refused_not_ignored(stage_types: dict) -> None:
    found = problems({"stages": [{"type": "route", "retires": 3}]}, stage_types)
    assert found[0].startswith("ws.yaml: stages.0.retires: got 3;")


def test_on_failure_accepts_only_open_or_closed(stage_types: dict) -> None:
    found = problems(
        {"stages": [{"type": "auth", "on_failure": "maybe"}, {"type": "route"}]},
        stage_types,
    )
    assert "stages.0.on_failure: got 'maybe'" in found[0]


def test_every_problem_of_a_file_is_reported_at_once(stage_types: dict) -> None:
    found = problems(
        {
            "stages": [
                {"type": "auth", "models": "m"},
                {"type": "route", "retries": "x"},
            ]
        },
        stage_types,
    )
    assert [line.split(":")[1].strip() for line in found] == [
        "stages.0.models",
        "stages.1.retries",
    ]


def test_a_pipeline_needs_exactly_one_stage_that_calls_the_provider(
    stage_types: dict,
) -> None:
    assert (
        "0 response stages" in problems({"stages": [{"type": "auth"}]}, stage_types)[0]
    )
    twice = {"stages": [{"type": "route"}, {"type": "route", "id": "second"}]}
    assert "2 response stages" in problems(twice, stage_types)[0]


def test_a_stage_that_must_be_first_is_refused_elsewhere(stage_types: dict) -> None:
    found = problems(
        {"stages": [{"type": "auth"}, {"type": "audit"}, {"type": "route"}]},
        stage_types,
    )
    assert found[0].startswith("ws.yaml: stages.1.type: got 'audit'; this stage must")


def test_a_repeated_stage_needs_its_own_id(stage_types: dict) -> None:
    found = problems(
        {"stages": [{"type": "auth"}, {"type": "auth"}, {"type": "route"}]}, stage_types
    )
    assert "stages.1: got a second stage 'auth'" in found[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "got an empty file"),
        ([1], "got list"),
        ({"stages": []}, "stages: got []"),
        ({"stages": [], "extra": 1}, "extra: got an unknown key"),
    ],
)
def test_the_shape_of_the_file_is_checked(
    raw: object, expected: str, stage_types: dict
) -> None:
    assert expected in problems(raw, stage_types)[0]


def test_invalid_yaml_names_the_file(tmp_path: Path, stage_types: dict) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text("stages: [\n")
    with pytest.raises(ConfigError) as caught:
        read_pipeline(path, stage_types)
    assert str(caught.value).startswith(f"{path}: got invalid YAML")


def test_a_workspace_file_wins_over_the_default(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text("stages: []")
    assert pipeline_file(tmp_path, "acme") == tmp_path / "default.yaml"
    (tmp_path / "acme.yaml").write_text("stages: []")
    assert pipeline_file(tmp_path, "acme") == tmp_path / "acme.yaml"
    assert pipeline_file(tmp_path / "missing", "acme") is None


def test_the_shipped_default_pipeline_is_valid(stage_types: dict) -> None:
    shipped = Path(__file__).parents[1] / "pipelines" / "default.yaml"
    assert [t.type_name for t, _ in read_pipeline(shipped, stage_types).stages] == [
        "audit",
        "auth",
        "route",
    ]
