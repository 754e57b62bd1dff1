"""Serving's logs as off-policy evaluation reads them: exploration's propensities and a shadow variant's
slates go from a real server through ingest and the marts into evaluate_experiment unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from pipelines.experiments.off_policy import evaluate_experiment, pick
from pipelines.ingest.run import ingest_interval
from pipelines.publication.publish import current_version
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from serving.config import ServingSettings
from serving.main import create_app
from serving.publication import Publication
from tests.conftest import copy_home
from tests.serving.test_serving import wait_until
from tests.serving.test_variants import NAME, SHADOW, add_versions, write_state


def test_a_shadow_variant_is_scored_from_the_servers_own_exploration_logs(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    add_versions(settings.home)
    live = Publication(settings.published_dir / current_version(settings.published_dir))
    write_state(settings.home, live.version)
    app = create_app(ServingSettings(home=settings.home, exploration_epsilon=0.3, impressions_flush_seconds=60.0))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/experimentz").json()["experiments"], "the experiment was never routed")
        answers = [client.get(f"/v1/users/{u}/recommendations", params={"k": 5}).json() for u in live.user_ids[:150]]
    # The app reports a click on the first item of each routed answer whose first slot was not explored.
    clicked = [b for b in answers if b["variant"] in ("control", "challenger") and b["items"][0]["reason"] != "explore"]
    outcomes = [
        {"event_id": f"c{n}", "user_id": b["user_id"], "item_id": b["items"][0]["item_id"], "event_type": "click",
         "event_ts": datetime.now(UTC).isoformat(), "context": {"request_id": b["request_id"]}}
        for n, b in enumerate(clicked)
    ]  # fmt: skip
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = settings.landing_dir / "events" / f"date={day:%Y-%m-%d}"
    events.mkdir(parents=True, exist_ok=True)
    (events / "outcomes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in outcomes))
    ingest_interval(settings, day, day + timedelta(days=1))
    build_warehouse(settings)
    with connect(settings) as warehouse:
        estimates = evaluate_experiment(warehouse.con, NAME, "shadowed", clip=100.0)
    shown_in_experiment = sum(len(b["items"]) for b in answers if b["experiment"] == NAME)
    ips = pick(estimates, "ips")
    # Every shown slot of the experiment is a logged row. The shadow (a copy of CURRENT) would show each
    # clicked item there, shown with propensity 1 - epsilon: each click weighs 1 / 0.7 in IPS.
    assert ips.n_rows == shown_in_experiment and len(clicked) > 10
    assert ips.value == pytest.approx(len(clicked) / (1 - 0.3) / shown_in_experiment)
    assert 0 < ips.ess <= ips.n_rows
    assert SHADOW not in {b["version"] for b in answers}
