"""The names in pipelines/contract.py are the ones the files beside Python spell: dbt, GX, Compose, SQL."""

import json
import re

import yaml

from pipelines.contract import EVENT_TYPES, WAREHOUSE_POOL
from pipelines.ingest.batch import CLASSIFY_SQL
from pipelines.runtime.airflow_home import CREATE_WAREHOUSE_POOL
from pipelines.settings import REPO_ROOT, SIGNAL_WEIGHT_SETTINGS
from pipelines.warehouse.transform import DATA_TESTS_KEY_VAR, DATA_TESTS_RECORD
from serving.events import OUTCOME_REQUEST_ID

DBT = REPO_ROOT / "dbt_project"


def test_dbt_accepts_exactly_the_contracts_event_types():
    staging = yaml.safe_load((DBT / "models" / "staging" / "_staging.yml").read_text())
    events = next(model for model in staging["models"] if model["name"] == "stg_events")
    column = next(column for column in events["columns"] if column["name"] == "event_type")
    accepted = next(test["accepted_values"] for test in column["data_tests"] if "accepted_values" in test)
    assert tuple(accepted["arguments"]["values"]) == EVENT_TYPES


def test_every_event_type_has_a_dbt_signal_weight_and_a_branch_in_the_macro():
    variables = yaml.safe_load((DBT / "dbt_project.yml").read_text())["vars"]
    assert set(SIGNAL_WEIGHT_SETTINGS) == set(EVENT_TYPES) and set(SIGNAL_WEIGHT_SETTINGS.values()) <= set(variables)
    macro = (DBT / "macros" / "signal_weight.sql").read_text()
    branches = set(re.findall(r"when '(\w+)' then \{\{ var\('weight_(\w+)'\) \}\}", macro))
    assert {(t, t) for t in EVENT_TYPES} - branches == {("view", "view")}  # view is the `else` branch
    assert "else {{ var('weight_view') }}" in macro


def test_the_committed_raw_events_suite_checks_the_contracts_event_types():
    suite = json.loads((REPO_ROOT / "expectations" / "expectations" / "raw_events.json").read_text())
    in_set = [
        e["kwargs"]["value_set"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "event_type"
    ]
    assert in_set == [list(EVENT_TYPES)]


def test_ingest_sql_takes_the_event_types_as_a_parameter_instead_of_spelling_them():
    sql = CLASSIFY_SQL.read_text()
    rule = r"when event_type is null or not list_contains\(\$event_types, event_type\)\s+then 'unknown_event_type'"
    assert re.search(rule, sql)
    assert len([t for t in EVENT_TYPES if f"'{t}'" in sql]) <= 1  # one type may have a rule of its own (ratings)


def test_compose_creates_the_warehouse_pool_the_dags_run_in():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    command = " ".join(compose["services"]["airflow-init"]["command"].split())
    pool, slots, description = CREATE_WAREHOUSE_POOL[2:]
    assert pool == WAREHOUSE_POOL
    assert f"airflow pools set {pool} {slots} '{description}'" in command


def test_the_slate_mart_joins_outcomes_by_the_contracts_request_id_key():
    """The key the CTR guardrail and the traffic simulator use is the one the mart reads from `context`."""
    sql = (DBT / "models" / "marts" / "slate_items.sql").read_text()
    keys = set(re.findall(r"json_text\('context', '(\w+)'\)", sql))
    assert keys == {OUTCOME_REQUEST_ID}


def test_the_data_tests_record_and_key_are_the_ones_transform_names():
    """dbt writes and reads the record and the key recforge's tests and commands name (changed_rows.sql)."""
    macro = (DBT / "macros" / "tests" / "changed_rows.sql").read_text()
    assert f"identifier='{DATA_TESTS_RECORD}'" in macro
    assert re.findall(r"var\('(\w+)'", macro) == [DATA_TESTS_KEY_VAR]
