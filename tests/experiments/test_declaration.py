"""Declarations: valid YAML and TOML files read alike; every wrong field is refused in one line naming the
file, the experiment and the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipelines.experiments.declaration import InvalidDeclaration, load_experiments, read_file
from tests.experiments.conftest import VALID, declaration, write_declarations

TOML = """
[[experiments]]
name = "home-ab"
salt = "s1"
holdback = 0.1
start = 2026-12-01T00:00:00Z
end = 2026-12-15T00:00:00Z
primary_metric = "ctr"
variants = [
  { name = "control", alias = "champion", share = 0.45 },
  { name = "challenger", alias = "challenger", share = 0.45 },
]
shadow = [{ name = "shadowed", version = "12" }]
guardrails = [{ metric = "conversion", max_drop = 0.05 }]
"""


def test_yaml_and_toml_declarations_read_alike(tmp_path):
    from_yaml = read_file(write_declarations(tmp_path, VALID))[0]
    toml = tmp_path / "more.toml"
    toml.write_text(TOML)
    from_toml = read_file(toml)[0]
    fields = ("name", "salt", "variants", "holdback", "shadow", "start", "end", "guardrails")
    assert [getattr(from_yaml, f) for f in fields] == [getattr(from_toml, f) for f in fields]
    assert from_yaml.arms == ("control", "challenger", "holdback")
    assert from_yaml.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert from_yaml.shares_at() == [("control", 0.45), ("challenger", 0.45), ("holdback", 0.1)]


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        ({"variants": [{"name": "control", "alias": "champion", "share": 0.5},
                       {"name": "challenger", "alias": "challenger", "share": 0.5}]},
         "variants", "sum to 1.1, not 1"),
        ({"variants": [{"name": "control", "alias": "champion", "share": 0.45},
                       {"name": "control", "alias": "challenger", "share": 0.45}]},
         "variants", "'control' is used twice"),
        ({"shadow": [{"name": "control", "version": "3"}]}, "variants", "'control' is used twice"),
        ({"end": "2026-11-30T00:00:00+00:00"}, "end", "is not after start"),
        ({"start": "first of december"}, "start", "not an ISO date or time"),
        ({"variants": [{"name": "control", "share": 0.9}]}, "variants[0]", "exactly one of version"),
        ({"variants": [{"name": "control", "alias": "champion", "share": -0.1},
                       {"name": "challenger", "alias": "challenger", "share": 1.0}]},
         "variants[0].share", "must lie in (0, 1]"),
        ({"variants": [{"name": "Bad Name", "alias": "champion", "share": 0.9}]}, "variants[0].name", "lower-case"),
        ({"holdback": 1.0, "variants": [{"name": "control", "alias": "champion", "share": 0.01}]}, "holdback",
         "must be below 1"),
        ({"primary_metric": "dwell"}, "primary_metric", "'dwell' is not one of"),
        ({"guardrails": [{"metric": "conversion", "max_drop": 2}]}, "guardrails[0].max_drop", "must lie in [0, 1]"),
        ({"shadow": [{"name": "shadowed", "version": "12", "share": 0.1}]}, "shadow[0].share", "has no share"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"holdback": None, "variants": [{"name": "control", "alias": "champion", "share": 1.0}]}, "variants",
         "at least two arms"),
        ({"canary": {"variant": "control", "schedule": [{"at": "2026-12-01", "share": 0.1}]}}, "canary.variant",
         "is the control"),
        ({"canary": {"variant": "challenger", "schedule": [{"at": "2026-12-01", "share": 0.5}]}},
         "canary.schedule[0].share", "exceeds the variant's share"),
        ({"canary": {"variant": "challenger", "schedule": [{"at": "2026-12-20", "share": 0.1}]}},
         "canary.schedule[0].at", "outside [start, end)"),
        ({"canary": {"variant": "challenger", "schedule": [{"at": "2026-12-02", "share": 0.2},
                                                            {"at": "2026-12-03", "share": 0.1}]}},
         "canary.schedule[1]", "never fall"),
        ({"canary": {"variant": "challenger", "schedule": [{"at": "2026-12-02", "share": 0.2}],
                     "rollback": {"max_error_rate": -1}}}, "canary.rollback.max_error_rate", "positive number"),
    ],
)  # fmt: skip
def test_a_wrong_field_is_refused_naming_file_experiment_and_field(tmp_path, changes, field, why):
    path = write_declarations(tmp_path, declaration(**changes))
    with pytest.raises(InvalidDeclaration) as refused:
        read_file(path)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: experiment 'home-ab': {field}: "), message
    assert why in message


def test_an_unparsable_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("experiments: [unclosed")
    with pytest.raises(InvalidDeclaration, match=rf"^{path}: cannot read: "):
        read_file(path)


def test_a_file_without_an_experiments_list_is_refused(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("name: home-ab\n")
    with pytest.raises(InvalidDeclaration, match="must hold a list named 'experiments'"):
        read_file(path)


def test_an_experiment_declared_in_two_files_is_refused_naming_both(declared):
    other = write_declarations(declared.home_experiments_dir, VALID, name="zz-again.yaml")
    with pytest.raises(InvalidDeclaration, match=rf"^{other}: experiment 'home-ab': name: already declared in .*"):
        load_experiments(declared)


def test_a_canary_ramps_its_share_from_the_control_and_keeps_its_users():
    from pathlib import Path

    from pipelines.experiments.declaration import parse_experiment

    raw = declaration(
        canary={
            "variant": "challenger",
            "schedule": [{"at": "2026-12-02", "share": 0.05}, {"at": "2026-12-04", "share": 0.45}],
            "rollback": {"max_error_rate": 0.01, "max_p99_seconds": 0.1, "max_ctr_drop": 0.2},
        }
    )
    experiment = parse_experiment(raw, Path("x.yaml"), 0)
    day = lambda d: datetime(2026, 12, d, tzinfo=UTC)  # noqa: E731
    assert experiment.shares_at(day(1)) == [("challenger", 0.0), ("control", 0.9), ("holdback", 0.1)]
    assert experiment.shares_at(day(3)) == [("challenger", 0.05), ("control", pytest.approx(0.85)), ("holdback", 0.1)]
    assert experiment.shares_at(day(5))[0] == ("challenger", 0.45)
    users = [f"user{i}" for i in range(3000)]
    early = {u for u in users if experiment.assign(u, day(3)) == "challenger"}
    late = {u for u in users if experiment.assign(u, day(5)) == "challenger"}
    holdback = {u for u in users if experiment.assign(u, day(1)) == "holdback"}
    assert early and early <= late  # the ramp only adds users to the canary
    assert holdback == {u for u in users if experiment.assign(u, day(5)) == "holdback"}
