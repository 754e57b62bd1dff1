"""Whether each declared experiment runs: RECFORGE_HOME/experiments/state.json, written by
`recforge experiments start|stop` (the declaration, under version control, says what it is; the state
says whether it is on). Serving and the daily readout read it; writes replace the file atomically.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pipelines.experiments.declaration import Experiment, get_experiment, load_experiments
from pipelines.settings import Settings

RUNNING, STOPPED, DECLARED = "running", "stopped", "declared"


class ExperimentStateError(ValueError):
    """A start or stop that cannot be done, in one line."""


def state_path(settings: Settings) -> Path:
    return settings.home_experiments_dir / "state.json"


def read_state(settings: Settings) -> dict[str, dict]:
    path = state_path(settings)
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExperimentStateError(f"{path}: unreadable experiment state: {error}") from None
    if not isinstance(state, dict):
        raise ExperimentStateError(f"{path}: unreadable experiment state: not a JSON object")
    return state


def _write_state(settings: Settings, state: dict) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def status_of(settings: Settings, name: str) -> str:
    return read_state(settings).get(name, {}).get("status", DECLARED)


def start_experiment(settings: Settings, name: str, now: datetime | None = None) -> str:
    """Mark a declared, valid experiment running; refuses one already running or past its end."""
    now = now or datetime.now(UTC)
    experiment = get_experiment(settings, name)
    state = read_state(settings)
    if state.get(name, {}).get("status") == RUNNING:
        raise ExperimentStateError(f"experiment {name!r} is already running (since {state[name]['started_at']})")
    if now >= experiment.end:
        raise ExperimentStateError(f"experiment {name!r} ended at {experiment.end.isoformat()}: declare a new end")
    state[name] = {
        "status": RUNNING,
        "started_at": now.isoformat(),
        "declared_in": str(experiment.source),
        # what serving routes by (serving.experiments.Assignment.from_json), and where each variant comes from
        "assignment": experiment.assignment.to_json(),
        "sources": {
            v.name: {"version": v.version, "alias": v.alias} for v in (*experiment.variants, *experiment.shadow)
        },
        "start": experiment.start.isoformat(),
        "end": experiment.end.isoformat(),
    }
    _write_state(settings, state)
    return f"experiment {name} running: {shares_text(experiment, now)} until {experiment.end:%Y-%m-%d %H:%M} UTC"


def stop_experiment(settings: Settings, name: str, now: datetime | None = None) -> str:
    """Mark a running experiment stopped (serving then shows everyone the control)."""
    now = now or datetime.now(UTC)
    get_experiment(settings, name)
    state = read_state(settings)
    if state.get(name, {}).get("status") != RUNNING:
        raise ExperimentStateError(
            f"experiment {name!r} is not running ({state.get(name, {}).get('status', DECLARED)})"
        )
    state[name] = {**state[name], "status": STOPPED, "stopped_at": now.isoformat()}
    _write_state(settings, state)
    return f"experiment {name} stopped"


def shares_text(experiment: Experiment, when: datetime | None = None) -> str:
    return ", ".join(f"{arm} {share:.0%}" for arm, share in experiment.shares_at(when))


def status_lines(settings: Settings, now: datetime | None = None) -> list[str]:
    """One line per declared experiment: state, window, current shares, variants' sources, last decision."""
    from pipelines.experiments.readout import last_decision

    now = now or datetime.now(UTC)
    state = read_state(settings)
    experiments = load_experiments(settings)
    if not experiments:
        return [f"no experiments declared (in {settings.experiments_dir} or {settings.home_experiments_dir})"]
    lines = []
    for name, experiment in sorted(experiments.items()):
        status = state.get(name, {}).get("status", DECLARED)
        sources = ", ".join(f"{v.name}={v.source}" for v in experiment.variants)
        shadow = f"; shadow {', '.join(v.name for v in experiment.shadow)}" if experiment.shadow else ""
        decision = last_decision(settings, name)
        lines.append(
            f"{name}: {status}, {experiment.start:%Y-%m-%d} to {experiment.end:%Y-%m-%d}; "
            f"shares now {shares_text(experiment, now)}; {sources}{shadow}; "
            f"last readout: {decision or 'none'}"
        )
    return lines
