"""Start and stop: the state file carries the assignment as JSON, so the server routes without pipelines/."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from pipelines.experiments.declaration import get_experiment
from pipelines.experiments.state import (
    ExperimentStateError,
    read_state,
    start_experiment,
    state_path,
    stop_experiment,
)
from tests.experiments.conftest import declaration, write_declarations

ROUTE_FROM_STATE = """
import json, sys
from datetime import datetime
from serving.experiments import Assignment
state = json.load(open(sys.argv[1]))
assignment = Assignment.from_json(state["home-ab"]["assignment"])
when = datetime.fromisoformat(sys.argv[2])
print(json.dumps([assignment.variant(f"user-{i}", when) for i in range(3000)]))
assert "pipelines" not in sys.modules and "yaml" not in sys.modules
"""


def test_the_server_routes_from_the_state_as_the_declaration_assigns(declared):
    """A fresh process that imports only serving.experiments assigns like the declaration, canary included."""
    canary = {
        "variant": "challenger",
        "schedule": [{"at": "2026-12-02", "share": 0.05}, {"at": "2026-12-05", "share": 0.45}],
    }
    write_declarations(declared.home_experiments_dir, declaration(canary=canary))
    experiment = get_experiment(declared, "home-ab")
    start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC))
    for when in ("2026-12-03T00:00:00+00:00", "2026-12-06T00:00:00+00:00"):
        done = subprocess.run([sys.executable, "-c", ROUTE_FROM_STATE, str(state_path(declared)), when],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        expected = [experiment.assign(f"user-{i}", datetime.fromisoformat(when)) for i in range(3000)]
        assert json.loads(done.stdout) == expected
    state = read_state(declared)["home-ab"]
    assert state["sources"]["shadowed"] == {"version": "12", "alias": None}
    assert state["assignment"]["shadow"] == ["shadowed"]


def test_start_refuses_an_experiment_past_its_end(declared):
    with pytest.raises(ExperimentStateError, match="ended at 2026-12-15T00:00:00\\+00:00"):
        start_experiment(declared, "home-ab", now=datetime(2027, 1, 1, tzinfo=UTC))


def test_stop_refuses_an_experiment_that_is_not_running(declared):
    with pytest.raises(ExperimentStateError, match="'home-ab' is not running \\(declared\\)"):
        stop_experiment(declared, "home-ab")


def test_an_unreadable_state_file_is_named(declared):
    state_path(declared).write_text("{not json")
    with pytest.raises(ExperimentStateError, match=f"^{state_path(declared)}: unreadable experiment state"):
        read_state(declared)
