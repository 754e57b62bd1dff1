"""dbt's unit tests: run here, against the project, and left out of the pipeline's builds."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.warehouse.transform import TransformError, build_warehouse, dbt_target_dir, run_unit_tests
from tests.conftest import copy_home


def declared_unit_tests(project: Path) -> set[str]:
    """Every unit test the project's .yml files declare, by name."""
    names = set()
    for path in (project / "models").rglob("*.yml"):
        names |= {test["name"] for test in yaml.safe_load(path.read_text()).get("unit_tests") or []}
    return names


def nodes_run(settings) -> list[str]:
    """The unique ids of the nodes the home's last dbt command ran (dbt's run_results.json)."""
    results = json.loads((dbt_target_dir(settings) / "run_results.json").read_text())["results"]
    return [result["unique_id"] for result in results]


def test_every_unit_test_the_project_declares_runs_and_passes(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    declared = declared_unit_tests(settings.dbt_project_dir)
    assert len(declared) >= 6  # deduplication, consent (two), sessions, segments, slate outcomes
    assert run_unit_tests(settings) == len(declared)
    assert {node.split(".")[-1] for node in nodes_run(settings) if node.startswith("unit_test.")} == declared


def test_a_pipeline_build_runs_the_data_tests_and_leaves_the_unit_tests_out(built, tmp_path):
    settings = copy_home(built, tmp_path / "home")
    build_warehouse(settings)
    ran = nodes_run(settings)
    assert not [node for node in ran if node.startswith("unit_test.")]
    assert len([node for node in ran if node.startswith("test.")]) > 50  # every data test still runs


def test_a_model_that_breaks_its_unit_test_fails_them_naming_the_test(built, tmp_path, monkeypatch):
    """The sessions model with its gap rule inverted: its unit test fails, and run_unit_tests says which."""
    project = tmp_path / "dbt_project"
    shutil.copytree(built.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "intermediate" / "int_sessions.sql"
    gap_rule = "> 60 * {{ var('session_gap_minutes') }} then 1"
    assert gap_rule in model.read_text()
    model.write_text(model.read_text().replace(gap_rule, "< 60 * {{ var('session_gap_minutes') }} then 1"))
    monkeypatch.setattr(type(built), "dbt_project_dir", property(lambda self: project))
    settings = copy_home(built, tmp_path / "home")
    with pytest.raises(TransformError, match="an_inactivity_gap_longer_than_the_var_starts_a_new_session: fail"):
        run_unit_tests(settings)
