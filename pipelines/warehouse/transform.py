"""Build the warehouse with dbt (staging -> intermediate -> marts, with their tests).

dbt is run in-process through its programmatic entry point, so a failing model or
test raises here with dbt's own message and the Airflow task fails with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipelines.runtime.environment import temporary_environment
from pipelines.settings import SIGNAL_WEIGHT_SETTINGS, Settings
from pipelines.warehouse.connection import ROW_GROUP_SIZE, catalog_name, shared_instance, temp_directory
from pipelines.warehouse.parsed_project import dbt_versions, invoke_dbt, project_files_digest

log = logging.getLogger(__name__)


class TransformError(RuntimeError):
    """dbt reported a failed model or test."""


@dataclass
class TransformResult:
    nodes_ok: int
    nodes_warned: int
    nodes_total: int

    def summary(self) -> str:
        return f"dbt build: {self.nodes_ok}/{self.nodes_total} nodes ok, {self.nodes_warned} warnings"


def dbt_environment(settings: Settings) -> dict[str, str]:
    """What profiles.yml reads: target and connections come from settings, never from the profile."""
    return {**dbt_parse_environment(settings), **dbt_location_environment(settings)}


def dbt_parse_environment(settings: Settings) -> dict[str, str]:
    """The part of dbt_environment a parse of the project depends on (the target's settings), kept with it."""
    return {
        # dbt attaches the file as recforge's connections do (connection.attached_file): the same in-process
        # instance, catalog name and row-group size, so a dbt run and recforge share the file, not fight over it.
        "RECFORGE_WAREHOUSE_CATALOG": catalog_name(settings.warehouse_path),
        "RECFORGE_WAREHOUSE_ROW_GROUP_SIZE": str(ROW_GROUP_SIZE),
        "RECFORGE_WAREHOUSE_MEMORY_LIMIT": settings.warehouse_memory_limit,
        "RECFORGE_DBT_TARGET": settings.dbt_target,
        "RECFORGE_PG_HOST": settings.pg_host,
        "RECFORGE_PG_PORT": str(settings.pg_port),
        "RECFORGE_PG_USER": settings.pg_user,
        "RECFORGE_PG_PASSWORD": settings.pg_password,
        "RECFORGE_PG_DATABASE": settings.pg_database,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def dbt_location_environment(settings: Settings) -> dict[str, str]:
    """Where the warehouse lies and where dbt writes its logs and artifacts: what differs between two homes
    without changing what dbt parses (a moved or copied home keeps its parse)."""
    return {
        "RECFORGE_WAREHOUSE": str(settings.warehouse_path),
        "RECFORGE_WAREHOUSE_INSTANCE": shared_instance(settings.warehouse_path),
        "RECFORGE_WAREHOUSE_TEMP_DIRECTORY": temp_directory(settings.warehouse_path),
        "DBT_LOG_PATH": str(settings.home / "dbt" / "logs"),
        "DBT_TARGET_PATH": str(dbt_target_dir(settings)),
    }


def run_dbt(settings: Settings, args: list[str]):
    """Invoke one dbt command against the project in dbt_project/; return dbt's result object.

    The project is parsed once for the same files, vars and target, and the parse kept in the process and the
    home (parsed_project.py)."""
    with temporary_environment(dbt_environment(settings)):
        outcome = invoke_dbt(
            Path(settings.dbt_project_dir), args, dbt_parses_dir(settings), dbt_parse_environment(settings)
        )
    if outcome.exception is not None:
        raise TransformError(f"dbt {' '.join(args)} could not run: {outcome.exception}")
    return outcome


# dbt's unit tests check a model's SQL on fixed input rows: their verdict changes with the project, never with the
# data, so the pipeline's builds leave them out (dbt's own advice for production runs) and `make test` runs them
# once against the project (run_unit_tests, tests/warehouse/test_unit_tests.py). Data tests stay in every build.
UNIT_TEST = "unit_test"  # dbt's resource type of a unit test
WITHOUT_UNIT_TESTS = ["--exclude-resource-type", UNIT_TEST]


def build_warehouse(settings: Settings, full_refresh: bool = False, select: str | None = None) -> TransformResult:
    """`dbt build`: every model and its data tests, in dependency order. Raises on any error or failed test.

    ``full_refresh`` rebuilds incremental models from scratch too (forgetting a user: their rows must
    leave ``int_events_deduped``, which a plain run only appends to). ``select``: a dbt selector to build
    only part of the project (the demo A/B builds ``slate_items``, after ``run_models`` refreshed what it reads).
    """
    outcome = run_dbt(
        settings,
        [
            "build", "--vars", _vars(settings), *WITHOUT_UNIT_TESTS, *(["--full-refresh"] if full_refresh else []),
            *(["--select", select] if select else []),
        ],
    )  # fmt: skip
    results = list(outcome.result or [])
    warned = [r for r in results if str(r.status) == "warn"]
    raise_on_failure(outcome, [r for r in results if str(r.status) in {"error", "fail", "runtime error"}], "dbt build")
    result = TransformResult(len(results) - len(warned), len(warned), len(results))
    if select is None:  # the stamp says when the whole warehouse was last built
        stamp = last_build_file(settings)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(
            json.dumps({"built_at": datetime.now(UTC).isoformat(), "nodes": len(results), "warned": len(warned)}) + "\n"
        )
    log.info(result.summary())
    return result


def run_unit_tests(settings: Settings) -> int:
    """`dbt test --select test_type:unit`: every model's unit tests. Returns how many ran; raises on a failure.

    The warehouse must be built: dbt reads the column types of the inputs a unit test does not give from it."""
    outcome = run_dbt(settings, ["test", "--vars", _vars(settings), "--select", "test_type:unit"])
    unit_tests = [r for r in outcome.result or [] if str(r.node.resource_type) == UNIT_TEST]  # not the hooks
    raise_on_failure(outcome, [r for r in unit_tests if str(r.status) != "pass"], "dbt unit tests")
    return len(unit_tests)


def run_models(settings: Settings, select: str) -> int:
    """`dbt run` of a selection, models only, no tests: a quick refresh of what a mart reads (the demo A/B
    refreshes ``+slate_items`` so, then builds and tests the mart itself). Returns the models run."""
    outcome = run_dbt(settings, ["run", "--vars", _vars(settings), "--select", select])
    results = list(outcome.result or [])
    failed = [r for r in results if str(r.status) in {"error", "runtime error"}]
    raise_on_failure(outcome, failed, f"dbt run --select {select}")
    return len(results)


def raise_on_failure(outcome, failed: list, command: str) -> None:
    """Raise TransformError naming every failed node (or pointing to dbt's log) when `command` did not succeed."""
    if failed or not outcome.success:
        details = "; ".join(f"{r.node.name}: {r.status} ({r.message})" for r in failed) or "see dbt log"
        raise TransformError(f"{command} failed: {details}")


def dbt_target_dir(settings: Settings) -> Path:
    """Where dbt writes its artifacts for this home (run_results.json, the static docs page)."""
    return settings.home / "dbt" / "target"


def dbt_parses_dir(settings: Settings) -> Path:
    """dbt's parses of the project kept in the home (parsed_project.py): a copied home needs no parse."""
    return settings.home / "dbt" / "parses"


def last_build_file(settings: Settings) -> Path:
    """When `dbt build` last succeeded (the health check's mart freshness); dbt's own run_results.json
    is rewritten by every dbt command, `dbt docs generate` included."""
    return settings.home / "dbt" / "last_build.json"


def last_build(settings: Settings) -> datetime | None:
    path = last_build_file(settings)
    return datetime.fromisoformat(json.loads(path.read_text())["built_at"]) if path.exists() else None


def generate_docs(settings: Settings) -> Path:
    """`dbt docs generate --static`: one self-contained page under reports/dbt_docs/ for analysts."""
    from pipelines.reports.index import write_index

    run_dbt(settings, ["docs", "generate", "--static", "--vars", _vars(settings)])
    target = settings.reports_dir / "dbt_docs" / "index.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dbt_target_dir(settings) / "static_index.html", target)
    write_index(settings)
    log.info("dbt docs written to %s", target)
    return target


# Settings that are dbt vars under the same name: dbt_project.yml holds their defaults (tested equal).
DBT_VARS = (
    "test_days",
    "valid_days",
    "decay_half_life_days",
    "session_gap_minutes",
    "bot_max_events_per_day",
    "cold_user_below",
    "segment_power_above",
    "attribution_window_hours",
    *SIGNAL_WEIGHT_SETTINGS.values(),
)


def dbt_vars(settings: Settings) -> dict[str, object]:
    """The dbt vars that come from settings, so one setting changes the SQL and whatever reads the marts."""
    return {name: getattr(settings, name) for name in DBT_VARS}


# The table where dbt records the last build that passed every data test (in the target's own schema), and the var
# that hands dbt the key it is recorded under: dbt_project/macros/tests/changed_rows.sql spells both
# (tests/test_contract.py checks it).
DATA_TESTS_RECORD = "data_tests_passed_through"
DATA_TESTS_KEY_VAR = "tests_key"


def data_tests_key(settings: Settings) -> str:
    """What a build's data tests depend on besides the rows: the project's files, the vars and dbt's versions.

    A build with the key of the last build that passed every test checks only the rows changed since
    (dbt_project/macros/tests/changed_rows.sql); any change of code, settings or dbt changes the key and every row
    is checked again. Empty (every row, every build) when settings.dbt_tests_scope is "all"."""
    if settings.dbt_tests_scope == "all":
        return ""
    digest = hashlib.sha256(f"{project_files_digest(Path(settings.dbt_project_dir))}\0{dbt_versions()}".encode())
    digest.update(json.dumps(dbt_vars(settings), sort_keys=True).encode())
    return digest.hexdigest()


def command_vars(settings: Settings) -> dict[str, object]:
    """The vars every dbt command of recforge passes: the settings' and the data tests' key (one parse for all)."""
    return {**dbt_vars(settings), DATA_TESTS_KEY_VAR: data_tests_key(settings)}


def _vars(settings: Settings) -> str:
    return json.dumps(command_vars(settings))
