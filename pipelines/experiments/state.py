"""Whether each declared experiment runs: RECFORGE_HOME/experiments/state.json, written by
`recforge experiments start|stop` (the declaration, under version control, says what it is; the state
says whether it is on). Serving and the daily readout read it; writes replace the file atomically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipelines.experiments.declaration import Experiment, Variant, get_experiment, load_experiments
from pipelines.settings import Settings
from serving.experiments import RUNNING, STATE_FILE, ExperimentStateError, read_state_file, update_state_file
from serving.format import complete_versions

STOPPED, DECLARED = "stopped", "declared"

__all__ = ["DECLARED", "RUNNING", "STOPPED", "ExperimentStateError", "start_experiment", "stop_experiment"]


def state_path(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def read_state(settings: Settings) -> dict[str, dict]:
    return read_state_file(state_path(settings))


def publication_version(settings: Settings, experiment: str, variant: Variant, registry_version=None) -> str:
    """The publication version that answers for `variant`: its ``version`` when that names a complete
    publication, else the newest complete publication of that registry version (``<time>-v<N>``); an
    ``alias`` is first resolved in the registry (`registry_version(alias) -> N`). Refused in one line
    when nothing published matches: serving only ever loads publications."""
    root = settings.home / "published"
    published = complete_versions(root) if root.is_dir() else []
    if variant.version is not None and variant.version in published:
        return variant.version
    if variant.version is not None:
        number, source = variant.version, f"version {variant.version}"
    else:
        number = (registry_version or _registry_version)(settings, variant.alias)
        if number is None:
            raise ExperimentStateError(
                f"experiment {experiment!r}: variant {variant.name!r}: registry alias {variant.alias!r} is not set"
            )
        source = f"alias {variant.alias} (registry version {number})"
    matching = [v for v in published if v.endswith(f"-v{number}")]
    if not matching:
        raise ExperimentStateError(
            f"experiment {experiment!r}: variant {variant.name!r}: no complete publication of {source} in {root}: "
            "publish that model version first"
        )
    return matching[-1]


def _registry_version(settings: Settings, alias: str) -> str | None:
    from pipelines.training.tracking import configure, version_by_alias

    client = configure(settings)
    found = version_by_alias(client, settings.registered_model_name, alias)
    return None if found is None else str(found.version)


def status_of(settings: Settings, name: str) -> str:
    return read_state(settings).get(name, {}).get("status", DECLARED)


def start_experiment(settings: Settings, name: str, now: datetime | None = None, registry_version=None) -> str:
    """Mark a declared, valid experiment running, each variant resolved to the publication version serving
    loads for it; refuses one already running, past its end, or with a variant nothing published answers."""
    now = now or datetime.now(UTC)
    experiment = get_experiment(settings, name)
    if now >= experiment.end:
        raise ExperimentStateError(f"experiment {name!r} ended at {experiment.end.isoformat()}: declare a new end")
    publications = {
        v.name: publication_version(settings, name, v, registry_version)
        for v in (*experiment.variants, *experiment.shadow)
    }
    canary = experiment.canary
    limits = {} if canary is None else {
        key: value for key in ("max_error_rate", "max_p99_seconds", "max_ctr_drop")
        if (value := getattr(canary, key)) is not None
    }  # fmt: skip
    update_state_file(state_path(settings), lambda state: _start(state, name, experiment, now, publications, limits))
    return f"experiment {name} running: {shares_text(experiment, now)} until {experiment.end:%Y-%m-%d %H:%M} UTC"


def _start(state: dict, name: str, experiment: Experiment, now: datetime, publications: dict, limits: dict) -> None:
    if state.get(name, {}).get("status") == RUNNING:
        raise ExperimentStateError(f"experiment {name!r} is already running (since {state[name]['started_at']})")
    state[name] = {
        "status": RUNNING,
        "started_at": now.isoformat(),
        "declared_in": str(experiment.source),
        # what serving routes by (serving.experiments.Assignment.from_json), and where each variant comes from
        "assignment": experiment.assignment.to_json(),
        "sources": {
            v.name: {"version": v.version, "alias": v.alias} for v in (*experiment.variants, *experiment.shadow)
        },
        # the publication version serving loads for each variant (aliases resolved now, once)
        "publications": publications,
        "canary_rollback": limits,  # a server rolls the canary back past these (serving/variants.py)
        "start": experiment.start.isoformat(),
        "end": experiment.end.isoformat(),
    }


def stop_experiment(settings: Settings, name: str, now: datetime | None = None) -> str:
    """Mark a running experiment stopped (serving then shows everyone the control)."""
    now = now or datetime.now(UTC)
    get_experiment(settings, name)

    def stop(state: dict) -> None:
        if state.get(name, {}).get("status") != RUNNING:
            raise ExperimentStateError(
                f"experiment {name!r} is not running ({state.get(name, {}).get('status', DECLARED)})"
            )
        state[name] = {**state[name], "status": STOPPED, "stopped_at": now.isoformat()}

    update_state_file(state_path(settings), stop)
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
        rollback = state.get(name, {}).get("rollback") if status == RUNNING else None
        shares = shares_text(experiment, now)
        if isinstance(rollback, dict):  # a server rolled the canary back: its share is 0 on every replica
            shares = f"canary {rollback.get('variant')} ROLLED BACK at {rollback.get('at')} ({rollback.get('reason')})"
        lines.append(
            f"{name}: {status}, {experiment.start:%Y-%m-%d} to {experiment.end:%Y-%m-%d}; "
            f"shares now {shares}; {sources}{shadow}; "
            f"last readout: {decision or 'none'}"
        )
    return lines
