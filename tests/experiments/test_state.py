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
from tests.experiments.conftest import PUBLISHED, declaration, registry_version, write_declarations

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
    start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC), registry_version=registry_version)
    for when in ("2026-12-03T00:00:00+00:00", "2026-12-06T00:00:00+00:00"):
        done = subprocess.run([sys.executable, "-c", ROUTE_FROM_STATE, str(state_path(declared)), when],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        expected = [experiment.assign(f"user-{i}", datetime.fromisoformat(when)) for i in range(3000)]
        assert json.loads(done.stdout) == expected
    state = read_state(declared)["home-ab"]
    assert state["sources"]["shadowed"] == {"version": "12", "alias": None}
    assert state["assignment"]["shadow"] == ["shadowed"]
    # each variant resolved once, here, to the publication version serving loads for it
    assert state["publications"] == {"control": PUBLISHED[0], "challenger": PUBLISHED[1], "shadowed": PUBLISHED[2]}


def test_an_alias_resolves_to_the_newest_publication_of_its_registry_version(declared):
    newer = "20261201T000000000000Z-v3"
    (declared.home / "published" / newer).mkdir()
    (declared.home / "published" / newer / "manifest.json").write_text("{}")
    start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC), registry_version=registry_version)
    assert read_state(declared)["home-ab"]["publications"]["control"] == newer


def test_start_refuses_a_variant_nothing_published_answers(declared):
    import shutil

    shutil.rmtree(declared.home / "published" / PUBLISHED[1])
    message = "variant 'challenger': no complete publication of alias challenger \\(registry version 4\\)"
    with pytest.raises(ExperimentStateError, match=message):
        start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC), registry_version=registry_version)
    with pytest.raises(ExperimentStateError, match="variant 'control': registry alias 'champion' is not set"):
        start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC), registry_version=lambda s, a: None)
    assert read_state(declared) == {}


def test_status_shows_a_canary_a_server_rolled_back(declared):
    from pipelines.experiments.state import status_lines
    from serving.experiments import update_state_file

    start_experiment(declared, "home-ab", now=datetime(2026, 12, 1, tzinfo=UTC), registry_version=registry_version)
    rollback = {"variant": "challenger", "at": "2026-12-02T10:00:00+00:00", "reason": "error rate 5.00% > 1.00%"}
    update_state_file(state_path(declared), lambda state: state["home-ab"].update(rollback=rollback))
    (line,) = status_lines(declared, now=datetime(2026, 12, 3, tzinfo=UTC))
    assert "canary challenger ROLLED BACK at 2026-12-02T10:00:00+00:00 (error rate 5.00% > 1.00%)" in line


def test_start_refuses_an_experiment_past_its_end(declared):
    with pytest.raises(ExperimentStateError, match="ended at 2026-12-15T00:00:00\\+00:00"):
        start_experiment(declared, "home-ab", now=datetime(2027, 1, 1, tzinfo=UTC), registry_version=registry_version)


def test_stop_refuses_an_experiment_that_is_not_running(declared):
    with pytest.raises(ExperimentStateError, match="'home-ab' is not running \\(declared\\)"):
        stop_experiment(declared, "home-ab")


def test_an_unreadable_state_file_is_named(declared):
    state_path(declared).write_text("{not json")
    with pytest.raises(ExperimentStateError, match=f"^{state_path(declared)}: unreadable experiment state"):
        read_state(declared)
