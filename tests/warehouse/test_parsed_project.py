"""dbt's parse kept per process (pipelines/warehouse/parsed_project.py): a second home is built without
parsing the project again, and anything the parse depends on parses it anew."""

import json
import os
import shutil

import pytest
from dbt.parser.manifest import ManifestLoader

from pipelines.warehouse import parsed_project
from pipelines.warehouse.connection import connect
from pipelines.warehouse.parsed_project import parse_key
from pipelines.warehouse.transform import (
    TransformError,
    build_warehouse,
    command_vars,
    dbt_environment,
    dbt_location_environment,
    dbt_parse_environment,
    dbt_parses_dir,
    run_dbt,
)
from tests.conftest import copy_home


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The project directories dbt parses (from scratch or partially) from here on, none kept before."""
    parsed_project.forget_parses()
    seen: list[str] = []
    original = ManifestLoader.get_full_manifest.__func__

    def counting(cls, config, *args, **kwargs):
        seen.append(config.project_root)
        return original(cls, config, *args, **kwargs)

    monkeypatch.setattr(ManifestLoader, "get_full_manifest", classmethod(counting))
    yield seen
    parsed_project.forget_parses()


def mart_rows(settings) -> list[tuple]:
    with connect(settings) as con:
        return con.execute("select * from marts.interactions order by user_id, item_id").fetchall()


def test_a_second_home_is_built_with_the_parse_of_the_first_and_gets_the_same_marts(built, tmp_path, parses):
    first, second = copy_home(built, tmp_path / "first"), copy_home(built, tmp_path / "second")
    for home in (first, second):  # as if built before parses were kept
        shutil.rmtree(dbt_parses_dir(home))
    listing = ["ls", "--vars", json.dumps(command_vars(first))]
    run_dbt(first, listing)
    assert len(parses) == 1
    run_dbt(second, listing)
    assert len(parses) == 1  # no parse for the second home, which keeps the parse too
    [kept] = dbt_parses_dir(first).iterdir()
    assert kept.suffix == ".msgpack" and [path.name for path in dbt_parses_dir(second).iterdir()] == [kept.name]
    # A copy of a home carries the parse: a process that holds none loads it instead of parsing, and the
    # build with it gives the marts the build with dbt's own parse gave.
    parsed_project.forget_parses()
    third = copy_home(first, tmp_path / "third")
    build_warehouse(third)
    assert len(parses) == 1
    assert mart_rows(third) == mart_rows(built)
    # Other vars are another parse; the kept one still serves the first vars.
    run_dbt(second, ["ls", "--vars", json.dumps({**command_vars(second), "decay_half_life_days": 3})])
    assert len(parses) == 2
    run_dbt(first, listing)
    assert len(parses) == 2


def test_the_key_changes_with_the_projects_files_vars_and_target_but_not_with_the_homes_location(
    built, tmp_path, monkeypatch
):
    project = tmp_path / "dbt_project"
    shutil.copytree(built.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    environment = dbt_parse_environment(built)
    args = ["build", "--vars", '{"test_days": 3}']
    key = parse_key(project, args, environment)

    # profiles.yml reads the two parts; between two homes only the locations differ, and they are not in the key.
    moved = copy_home(built, tmp_path / "moved")
    assert not set(dbt_parse_environment(moved)) & set(dbt_location_environment(moved))
    assert dbt_environment(moved) == {**dbt_parse_environment(moved), **dbt_location_environment(moved)}
    assert dbt_location_environment(moved) != dbt_location_environment(built)
    assert parse_key(project, args, dbt_parse_environment(moved)) == key
    assert parse_key(project, ["run", "--select", "x", "--vars", '{"test_days": 3}'], environment) == key
    # dbt's own output inside the project is not a source of the parse.
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text("{}")
    assert parse_key(project, args, environment) == key

    assert parse_key(project, ["build", "--vars", '{"test_days": 4}'], environment) != key
    assert parse_key(project, ["build"], environment) != key
    assert parse_key(project, args, {**environment, "RECFORGE_DBT_TARGET": "postgres"}) != key
    assert parse_key(project, args, {**environment, "RECFORGE_PG_DATABASE": "other"}) != key
    with monkeypatch.context() as patched:
        patched.setattr(parsed_project, "dbt_versions", lambda: "dbt-duckdb==99.0")
        assert parse_key(project, args, environment) != key
    model = project / "models" / "marts" / "interactions.sql"
    model.write_text(model.read_text() + "\n-- changed\n")
    changed = parse_key(project, args, environment)
    assert changed != key
    (project / "macros" / "new_macro.sql").write_text("{% macro new_macro() %}1{% endmacro %}\n")
    assert parse_key(project, args, environment) not in {key, changed}


def test_a_project_that_fails_to_parse_raises_with_dbts_message_and_keeps_nothing(built, tmp_path, monkeypatch):
    project = tmp_path / "dbt_project"
    shutil.copytree(built.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "interactions.sql"
    model.write_text("{{ config(materialized=not_a_macro()) }}\nselect 1 as x\n")
    monkeypatch.setattr(type(built), "dbt_project_dir", property(lambda self: project))
    settings = copy_home(built, tmp_path / "home")
    parsed_project.forget_parses()
    with pytest.raises(TransformError, match="dbt build could not run: Parsing Error"):
        run_dbt(settings, ["build"])
    assert not parsed_project._parses


def test_a_damaged_kept_parse_is_parsed_again_and_replaced(built, tmp_path, parses, caplog):
    settings = copy_home(built, tmp_path / "home")
    args = ["ls", "--vars", json.dumps(command_vars(settings))]
    run_dbt(settings, args)
    [kept] = dbt_parses_dir(settings).glob("*.msgpack")
    assert parses == []  # the copied home's parse
    kept.write_bytes(b"not a manifest")
    parsed_project.forget_parses()
    run_dbt(settings, args)
    assert len(parses) == 1 and "could not be read" in caplog.text
    assert kept.stat().st_size > 100_000  # the new parse replaced it
    parsed_project.forget_parses()
    run_dbt(settings, args)
    assert len(parses) == 1


def test_a_home_keeps_only_its_newest_parses(tmp_path):
    parses_dir = tmp_path / "parses"
    parses_dir.mkdir()
    for n in range(parsed_project.KEPT_PARSES + 2):
        path = parses_dir / f"old{n}.msgpack"
        path.write_bytes(b"x")
        os.utime(path, (n, n))

    class Manifest:
        def to_msgpack(self, encoder):
            return b"new"

    parsed_project.save_parse(parses_dir, "new", Manifest())
    kept = sorted(path.name for path in parses_dir.iterdir())
    assert len(kept) == parsed_project.KEPT_PARSES and "new.msgpack" in kept and "old0.msgpack" not in kept
