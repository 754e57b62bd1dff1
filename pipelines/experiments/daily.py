"""The daily readout of every running experiment: what recforge_experiment_readout calls.

Apart from readout.py because it reads the start/stop state, and the state's `status` reads the
readouts' records: neither of those two modules imports the other's caller.
"""

from __future__ import annotations

from datetime import datetime

from pipelines.experiments.declaration import get_experiment
from pipelines.experiments.readout import ReadoutBlocked, run_readout
from pipelines.experiments.state import RUNNING, read_state
from pipelines.settings import Settings


def read_out_running(settings: Settings, as_of: datetime) -> dict[str, str]:
    """Read out every running experiment that has begun by `as_of` (the daily DAG's one call).

    Every readout is written before any failure is raised, so one blocked experiment (SRM) neither hides
    the others' pages nor passes silently: the task fails naming every blocked experiment.
    """
    state = read_state(settings)
    decisions, blocked = {}, []
    for name in sorted(n for n, s in state.items() if s.get("status") == RUNNING):
        experiment = get_experiment(settings, name)
        if experiment.start > as_of:
            decisions[name] = "not started"
            continue
        try:
            readout, _ = run_readout(settings, name, as_of)
            decisions[name] = readout.decision
            print(readout.summary(), flush=True)
        except ReadoutBlocked as error:
            decisions[name] = "blocked"
            blocked.append(f"{name}: {error}")
    print(
        f"read out {len(decisions)} running experiments: "
        + (", ".join(f"{n} {d}" for n, d in decisions.items()) or "none")
    )
    if blocked:
        raise ReadoutBlocked("; ".join(blocked))
    return decisions
