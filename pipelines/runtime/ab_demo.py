"""The short A/B `recforge run` ends with: the new champion against the popularity holdback, with
simulated traffic through the server in-process, read out like any experiment.

Steps, each the same function the CLI runs: declare ``demo-champion-vs-holdback`` in
RECFORGE_HOME/experiments/ (a fresh salt and window each run: start now, end in a day), start it
(state.json, what serving routes by), run ``traffic_days`` of simulated visits against serving's app
in-process (pipelines/traffic/), ingest the landing days they wrote (events and the server's
impression files), refresh the models the impressions mart reads and build the mart (``dbt run
--select +slate_items``, ``dbt build --select slate_items``: the mart's own tests run), print the
readout (pipelines/experiments/readout.py), and stop the experiment, so the server `recforge run`
starts afterwards shows every user the champion. ``demo_experiment`` switches it off.

The traffic is stamped with the wall clock (serving stamps its impressions so, and an outcome must
follow its answer), while the simulated log lives in its own past: mixed into the home's warehouse,
today's demo events would become the next run's whole test period. So the demo runs on a scratch copy
of the home (``.demo-ab/`` inside it: the warehouse copied, the publications hard-linked, the same
MLflow registry), and only its readout (JSON record and HTML page, no user ids) is written back into
the home's reports. The scratch copy is deleted afterwards, whatever happens, so no copy of anyone's
events outlives the demo (forgetting never has to look there); a copy left by a killed run is removed
by the next.

The split comes from serving: an answer names the user's ``experiment`` and ``variant`` when serving
routes by a running experiment. A server that does not (answers without ``variant``) shows everyone
the champion outside any experiment; the readout then has no impressions under the experiment and
the demo says so rather than inventing a split.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import yaml

from pipelines.settings import Settings

DEMO_EXPERIMENT = "demo-champion-vs-holdback"
DECLARATION_FILE = f"{DEMO_EXPERIMENT}.yaml"
SCRATCH_HOME = ".demo-ab"  # inside RECFORGE_HOME: same file system, so publications can be hard-linked


@dataclass
class DemoOutcome:
    traffic: str
    readout: str
    routed: bool  # did any answer carry a variant of the demo experiment
    seconds: float

    def lines(self) -> list[str]:
        lines = [f"demo A/B ({self.seconds:.1f} s): {self.traffic}", f"  readout: {self.readout}"]
        if not self.routed:
            lines.append(
                "  no answer carried a variant of the experiment: this server does not route users by a running "
                "experiment, so every user saw the champion"
            )
        return lines


def declaration(settings: Settings, now: datetime) -> dict:
    """The demo experiment: the champion against the popularity holdback, from now for a day."""
    holdback = settings.demo_experiment_holdback
    return {
        "name": DEMO_EXPERIMENT,
        "description": "recforge run's demo: the champion against the popularity holdback, simulated traffic.",
        "salt": now.strftime("%Y%m%dT%H%M%S"),
        "variants": [{"name": "champion", "alias": "champion", "share": round(1 - holdback, 12)}],
        "holdback": holdback,
        "start": (now - timedelta(seconds=1)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
        "primary_metric": "ctr",
    }


def declare(settings: Settings, now: datetime):
    """Write the declaration (replacing an earlier run's) and return its path."""
    folder = settings.home_experiments_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DECLARATION_FILE
    path.write_text(
        "# Written by `recforge run` (pipelines/runtime/ab_demo.py) for its demo A/B; rewritten each run.\n"
        + yaml.safe_dump({"experiments": [declaration(settings, now)]}, sort_keys=False)
    )
    return path


def landing_window(files: list[str], now: datetime) -> tuple[datetime, datetime]:
    """[first, last + 1 day) over the landing days of the traffic's event files and of today."""
    days = {now.date(), *(datetime.strptime(f.split("date=")[1][:10], "%Y-%m-%d").date() for f in files)}
    first = datetime.combine(min(days), datetime.min.time(), tzinfo=UTC)
    return first, datetime.combine(max(days), datetime.min.time(), tzinfo=UTC) + timedelta(days=1)


def scratch_home(settings: Settings) -> Settings:
    """A copy of the home the demo may write into: the warehouse copied, the publications, the item catalog and
    dbt's kept parse hard-linked (none is written in place), the home's MLflow registry (aliases, decision tags)."""
    from pipelines.warehouse.transform import dbt_parses_dir

    scratch = settings.home / SCRATCH_HOME
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    shutil.copy2(settings.warehouse_path, scratch / settings.warehouse_path.name)
    shutil.copytree(settings.published_dir, scratch / settings.published_dir.name, copy_function=os.link)
    catalog = settings.landing_dir / "catalog"  # ingest reads the item catalog beside the events
    shutil.copytree(catalog, scratch / settings.landing_dir.name / catalog.name, copy_function=os.link)
    demo = Settings(**{**settings.model_dump(), "home": scratch, "mlflow_tracking_uri": settings.tracking_uri})
    demo.ensure_dirs()
    if dbt_parses_dir(settings).is_dir():  # dbt's kept parse (replaced, never written in place): no parse again
        shutil.copytree(dbt_parses_dir(settings), dbt_parses_dir(demo), copy_function=os.link)
    return demo


def run_demo(settings: Settings, now: datetime | None = None) -> DemoOutcome:
    """The demo on a scratch copy of the home; its readout written back into the home's reports."""
    try:
        return demo_on(scratch_home(settings), settings, now)
    finally:
        shutil.rmtree(settings.home / SCRATCH_HOME, ignore_errors=True)


def demo_on(settings: Settings, home: Settings, now: datetime | None = None) -> DemoOutcome:
    """The demo on `settings` (a scratch copy of `home`), its readout written into `home`'s reports."""
    from pipelines.experiments.declaration import get_experiment
    from pipelines.experiments.readout import ReadoutBlocked, run_readout, write_readout
    from pipelines.experiments.state import RUNNING, start_experiment, status_of, stop_experiment
    from pipelines.ingest import ingest_interval
    from pipelines.traffic.run import simulate_server_traffic
    from pipelines.warehouse.transform import build_warehouse, run_models

    began = time.perf_counter()
    now = now or datetime.now(UTC)
    if status_of(settings, DEMO_EXPERIMENT) == RUNNING:  # an earlier run's, interrupted
        stop_experiment(settings, DEMO_EXPERIMENT, now)
    declare(settings, now)
    start_experiment(settings, DEMO_EXPERIMENT, now)
    try:
        traffic = simulate_server_traffic(settings.model_copy(update={"traffic_base_url": None}))
        ingest_interval(settings, *landing_window(traffic.files, datetime.now(UTC)))
        # The models the mart reads, refreshed without their tests (the transform DAG tests them), then
        # the mart built and tested: 3 s instead of 10 s for building and testing the whole chain.
        run_models(settings, "+slate_items")
        build_warehouse(settings, select="slate_items")
        try:
            readout, _ = run_readout(settings, DEMO_EXPERIMENT, datetime.now(UTC))
            page = write_readout(home, get_experiment(settings, DEMO_EXPERIMENT), readout)
            said = f"{readout.summary()} (report: {page})"
        except ReadoutBlocked as blocked:
            said = f"blocked: {str(blocked).split(' (report: ')[0]}"
    finally:
        stop_experiment(settings, DEMO_EXPERIMENT, datetime.now(UTC))
    variants = set(traffic.requests_by_variant) - {"none"}
    return DemoOutcome(traffic.summary(), said, bool(variants), time.perf_counter() - began)
