"""The demo A/B's declaration is a valid experiment (champion against the popularity holdback, from now
for a day), and a second run replaces the first (tests/traffic/test_server_traffic.py starts and runs
it on a published home)."""

from datetime import UTC, datetime, timedelta

from pipelines.experiments.declaration import get_experiment
from pipelines.runtime.ab_demo import DEMO_EXPERIMENT, declare, landing_window

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def test_the_demo_declares_the_champion_against_the_holdback_from_now_for_a_day(settings):
    settings = settings.model_copy(update={"demo_experiment_holdback": 0.3})
    declare(settings, NOW)
    experiment = get_experiment(settings, DEMO_EXPERIMENT)
    assert experiment.arms == ("champion", "holdback")
    assert dict(experiment.shares_at(NOW)) == {"champion": 0.7, "holdback": 0.3}
    assert experiment.variants[0].alias == "champion"
    assert experiment.start <= NOW < experiment.end == NOW + timedelta(days=1)


def test_a_later_run_declares_a_fresh_salt_and_window(settings):
    declare(settings, NOW)
    first = get_experiment(settings, DEMO_EXPERIMENT)
    declare(settings, NOW + timedelta(days=3))
    second = get_experiment(settings, DEMO_EXPERIMENT)
    assert second.salt != first.salt and second.start > first.end


def test_the_ingest_window_covers_today_and_every_day_the_traffic_landed_on():
    files = ["events/date=2026-12-03/traffic-a.jsonl", "events/date=2026-12-04/traffic-a.jsonl"]
    start, end = landing_window(files, NOW)
    assert (start, end) == (datetime(2026, 12, 3, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC))
