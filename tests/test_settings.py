"""Every setting has a valid range, and a value outside it stops every entry point with one line.

The line names the environment variable, the value given and the range, which is derived from the
field's own constraints (serving.config.valid_range), so a new setting cannot be added unbounded
and its rule is never written twice.
"""

import os
import subprocess
import sys
import types
import typing
from datetime import date
from pathlib import Path

import annotated_types
import pytest
from pydantic import SecretStr

from pipelines.settings import REPO_ROOT, InvalidSettings, Settings, get_settings
from serving.config import ServingSettings, valid_range
from serving.config import get_settings as serving_settings

# (variable, value, the range the line must state)
INVALID = [
    ("RECFORGE_BOT_MAX_EVENTS_PER_MINUTE", "0", "an integer >= 1"),
    ("RECFORGE_LATE_ARRIVAL_DAYS", "-5", "an integer in [0, 3650]"),
    ("RECFORGE_ALS_FACTORS", "0", "an integer in [1, 4096]"),
    ("RECFORGE_PUBLISH_TOP_N", "-1", "an integer in [1, 1000]"),
    ("RECFORGE_PUBLISH_BATCH_USERS", "0", "an integer in [1, 10000000]"),
    ("RECFORGE_SIM_USERS", "lots", "an integer >= 1"),
    ("RECFORGE_SIM_DUPLICATE_SHARE", "1.5", "a finite number in [0, 1]"),
    ("RECFORGE_DRIFT_MAX_USER_ACTIVITY_PSI", "inf", "a finite number >= 0"),
    ("RECFORGE_MAX_BOT_SHARE", "nan", "a finite number in [0, 1]"),
    ("RECFORGE_CATEGORY_CAP", "0", "a finite number in (0, 1]"),
    ("RECFORGE_PG_PORT", "70000", "an integer in [1, 65535]"),
    ("RECFORGE_FAISS_HNSW_M", "1", "an integer in [2, 512]"),
    ("RECFORGE_DBT_TARGET", "sqlite", "one of 'duckdb', 'postgres'"),
    ("RECFORGE_BACKTEST_STEP_DAYS", "0", "a finite number > 0, or unset"),
    ("RECFORGE_PG_DATABASE", "", "non-empty text"),
    ("RECFORGE_TRAIN_CANDIDATES", "als", "a JSON list"),
    ("RECFORGE_WAREHOUSE_MEMORY_LIMIT", "lots", "a size DuckDB reads"),
    ("RECFORGE_TRAIN_CRON", "every monday", "a cron expression"),
    ("RECFORGE_TRAIN_CRON", " ", "a cron expression"),
    ("RECFORGE_HEALTH_WEBHOOK_URL", "hooks.slack.com/x", "an http(s) URL with a host"),
    ("RECFORGE_SERVING_METRICS_URL", "ftp://host/metrics", "an http(s) URL with a host"),
    ("RECFORGE_TUNE_TRIALS", "0", "an integer in [1, 10000]"),
    ("RECFORGE_TRAIN_FINAL_WARM_SWEEPS", "-1", "an integer in [0, 1000]"),
    ("RECFORGE_TUNE_TIMEOUT_SECONDS", "0", "a finite number in (0, 86400]"),
    ("RECFORGE_TUNE_VALID_DAYS", "-1", "a finite number in (0, 365]"),
    ("RECFORGE_TUNE_VALID_FOLDS", "11", "an integer in [1, 10]"),
    ("RECFORGE_TUNE_RETUNE_AFTER_DAYS", "-1", "a finite number in [0, 3650]"),
    ("RECFORGE_TUNE_ENABLED", "maybe", "true or false"),
    ("RECFORGE_CALIBRATION_LAMBDA", "1.5", "a finite number in [0, 1]"),
    ("RECFORGE_SELLER_CAP", "-1", "an integer in [0, 1000]"),
    ("RECFORGE_GATE_MAX_GINI_RISE", "-0.1", "a finite number in [0, 1]"),
    ("RECFORGE_AUDIT_Z", "0", "a finite number in (0, 10]"),
    ("RECFORGE_OPE_CLIP", "0.5", "a finite number in [1, 1000000]"),
    ("RECFORGE_TRAFFIC_BASE_URL", "localhost:8000", "an http(s) URL with a host"),
    ("RECFORGE_TRAFFIC_DAYS", "0", "an integer in [1, 30]"),
    ("RECFORGE_TRAFFIC_VISIT_RATE", "0", "a finite number in (0, 20]"),
    ("RECFORGE_TRAFFIC_POSITION_BIAS", "-1", "a finite number in [0, 5]"),
    ("RECFORGE_TRAFFIC_CART_SHARE", "1.5", "a finite number in [0, 1]"),
    ("RECFORGE_DEMO_EXPERIMENT_HOLDBACK", "1", "a finite number in (0, 1)"),
    ("RECFORGE_PROMOTION_REQUIRES_EXPERIMENT_WIN", "maybe", "true or false"),
]
SERVING_INVALID = [
    ("RECFORGE_PORT", "99999", "an integer in [1, 65535]"),
    ("RECFORGE_RELOAD_INTERVAL_SECONDS", "0", "a finite number in [0.1, 3600]"),
    ("RECFORGE_FAISS_THREADS", "0", "an integer in [1, 256]"),
    ("RECFORGE_COLLECTOR_BACKEND", "kafka", "one of 'segments', 'redis'"),
    ("RECFORGE_COLLECTOR_SEGMENT_MAX_BYTES", "10", "an integer in [4096, 4294967296]"),
]


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.mark.parametrize(("variable", "value", "expected"), INVALID, ids=[v for v, *_ in INVALID])
def test_an_out_of_range_setting_stops_the_cli_with_one_line_naming_it_and_its_range(
    variable, value, expected, tmp_path, monkeypatch, capsys
):
    from pipelines.cli import main

    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(variable, value)
    assert main(["status"]) == 1
    error = one_error_line(capsys)
    assert error.startswith("recforge status: error: invalid setting: ")
    assert f"{variable}={value!r}: must be {expected}" in error
    assert not (tmp_path / "home").exists()  # refused before anything was written


@pytest.mark.parametrize(("variable", "value", "expected"), SERVING_INVALID, ids=[v for v, *_ in SERVING_INVALID])
def test_an_out_of_range_serving_setting_stops_recforge_serve_with_one_line(
    variable, value, expected, tmp_path, monkeypatch, capsys
):
    from pipelines.cli import main

    serving_settings.cache_clear()
    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 1
    assert f"recforge serve: error: invalid setting: {variable}={value!r}: must be {expected}" == one_error_line(capsys)


def test_python_m_serving_refuses_a_port_out_of_range_with_one_line(tmp_path):
    env = {**os.environ, "RECFORGE_HOME": str(tmp_path), "RECFORGE_PORT": "99999", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "serving"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == "serve: error: invalid setting: RECFORGE_PORT='99999': must be an integer in [1, 65535]"
    )


def test_several_rejected_settings_are_named_on_the_same_line(monkeypatch):
    monkeypatch.setenv("RECFORGE_SIM_DAYS", "0")
    monkeypatch.setenv("RECFORGE_TEST_DAYS", "-1")
    with pytest.raises(InvalidSettings) as raised:
        get_settings()
    message = str(raised.value)
    assert message.startswith("invalid settings: ") and "\n" not in message
    assert "RECFORGE_SIM_DAYS='0': must be an integer >= 1" in message
    assert "RECFORGE_TEST_DAYS='-1': must be an integer >= 1" in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ingest_start_date": date(2026, 2, 1), "ingest_end_date": date(2026, 1, 1)},
         "RECFORGE_INGEST_END_DATE=2026-01-01 is before RECFORGE_INGEST_START_DATE=2026-02-01"),
        ({"cold_user_below": 20, "segment_power_above": 10},
         "RECFORGE_SEGMENT_POWER_ABOVE=10 is below RECFORGE_COLD_USER_BELOW=20"),
        ({"eval_k": 200}, "RECFORGE_EVAL_K / RECFORGE_RECALL_K must not exceed RECFORGE_PUBLISH_TOP_N"),
    ],
)  # fmt: skip
def test_cross_field_rules_name_both_variables(overrides, message, monkeypatch):
    for name, value in overrides.items():
        monkeypatch.setenv(f"RECFORGE_{name.upper()}", str(value))
    with pytest.raises(InvalidSettings, match=message):
        get_settings()


def _base(annotation):
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


@pytest.mark.parametrize("model", [Settings, ServingSettings], ids=lambda m: m.__name__)
def test_every_setting_declares_a_range(model):
    """Numbers need a bound, text must be non-empty or checked by a validator; the rest are bounded by type."""
    validated = {name for d in model.__pydantic_decorators__.field_validators.values() for name in d.info.fields}
    free_text = {"pg_password"}  # may be empty: trust authentication
    unbounded = []
    for name, field in model.model_fields.items():
        annotation = _base(field.annotation)
        kinds = {type(item) for item in field.metadata}
        if annotation in (int, float):
            bounded = kinds & {annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt}
        elif annotation in (str, SecretStr):
            bounded = annotated_types.MinLen in kinds or name in validated or name in free_text
        else:
            bounded = typing.get_origin(annotation) in (typing.Literal, list, dict) or annotation in (bool, date, Path)
        if not bounded:
            unbounded.append(name)
    assert unbounded == [], f"settings without a valid range: {unbounded}"
    assert model.model_config["allow_inf_nan"] is False


@pytest.mark.parametrize("model", [Settings, ServingSettings], ids=lambda m: m.__name__)
def test_every_default_lies_in_its_range(model):
    """pydantic does not validate defaults: passing them explicitly does."""
    defaults = model().model_dump()
    assert model(**defaults).model_dump() == defaults


def test_the_range_text_is_derived_from_the_fields_constraints():
    assert valid_range(Settings.model_fields["category_cap"]) == "a finite number in (0, 1]"
    assert valid_range(Settings.model_fields["eval_random_ratio"]) == "a finite number in (0, 1)"
    assert valid_range(Settings.model_fields["sim_seed"]) == f"an integer in [0, {2**32})"
    assert valid_range(Settings.model_fields["ingest_catchup"]) == "true or false"
    assert valid_range(Settings.model_fields["ingest_end_date"]) == "a date (YYYY-MM-DD), or unset"
    assert valid_range(Settings.model_fields["eval_split"]) == "one of 'global_time', 'leave_last_n', 'random_ratio'"


@pytest.mark.parametrize("value", ["4GB", "512 MiB", "1.5gb", "100000B"])
def test_duckdb_memory_sizes_are_accepted(value, tmp_path):
    assert Settings(home=tmp_path, warehouse_memory_limit=value).warehouse_memory_limit == value


@pytest.mark.parametrize("value", ["0 4 * * 1", "@daily", "*/15 * * * *", ""])
def test_cron_expressions_are_accepted(value, tmp_path):
    assert Settings(home=tmp_path, train_cron=value).train_cron == value
