"""The health check on a tiny published world: levels measured from their sources, breaches
stored and named, the webhook told once per run however often the check is retried."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.operations.health import (
    LEVELS,
    ServiceLevelBreached,
    enforce,
    measure,
    notify,
    quantile_from_buckets,
    serving_checks,
    stored,
)
from pipelines.warehouse.connection import connect
from serving.metrics import ServingMetrics
from tests.conftest import copy_home


class Receiver:
    """A local HTTP server standing in for a Slack webhook (or serving's /metrics)."""

    def __init__(self, statuses=(200,), body: bytes = b"ok"):
        self.posts: list[dict] = []
        self.statuses, self.body = list(statuses), body
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                if status == 200:
                    receiver.posts.append(payload)
                self.send_response(status)
                self.end_headers()

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_fresh_world_meets_every_level_it_can_measure(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    report = measure(settings, "fresh")
    values = {c.level: c for c in report.checks}
    assert set(values) == set(LEVELS)
    for level in ("publication_age_hours", "newest_event_age_hours", "mart_build_age_hours", "model_age_days"):
        assert values[level].value is not None and 0 <= values[level].value < 1, values[level]
    assert values["validation_pass_rate"].value == 1.0
    assert values["serving_p99_seconds"].value is None and "SERVING_METRICS_URL" in values["serving_p99_seconds"].detail
    assert report.breached == []
    enforce(settings, "fresh")  # does not raise
    with connect(settings) as con:
        assert con.execute("select count(*) from monitoring.health_checks where run_id = 'fresh'").fetchone()[0] == len(
            LEVELS
        )


def test_a_publication_older_than_its_level_fails_the_check_naming_it_and_the_webhook_hears_once(
    published, tmp_path, receiver
):
    hook = receiver(statuses=(500, 200))  # the first delivery fails: retried within the task
    settings = copy_home(
        published, tmp_path / "home", slo_publication_age_hours=0.0001, health_webhook_url=hook.url,
        health_webhook_attempts=3,
    )  # fmt: skip
    time.sleep(0.5)  # no new publication for longer than 0.36 s
    report = measure(settings, "stale")
    assert [c.level for c in report.breached] == ["publication_age_hours"]
    assert notify(settings, "stale") == "told the webhook about 1 breach(es)"
    measure(settings, "stale")  # the check's retry in the same run: stored once more, not told again
    assert notify(settings, "stale") == "already told for run stale"
    assert len(hook.posts) == 1
    assert "publication_age_hours" in hook.posts[0]["text"] and "> 0.0001" in hook.posts[0]["text"]
    breached = r"service level\(s\) breached: publication_age_hours: [\d.]+ > 0.0001"
    with pytest.raises(ServiceLevelBreached, match=breached):
        enforce(settings, "stale")
    assert len(stored(settings, "stale").checks) == len(LEVELS)  # the retry replaced, not doubled


def test_a_webhook_that_is_down_never_blocks_or_fails_the_check(published, tmp_path):
    settings = copy_home(
        published, tmp_path / "home", slo_publication_age_hours=0.0001,
        health_webhook_url="http://127.0.0.1:9/nobody", health_webhook_attempts=2,
    )  # fmt: skip
    measure(settings, "down")
    started = time.monotonic()
    assert notify(settings, "down").startswith("webhook failed 2 time(s)")
    assert time.monotonic() - started < 10


def test_notify_and_enforce_need_a_measurement_first(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    with pytest.raises(LookupError, match="no health check stored for run 'never': measure first"):
        enforce(settings, "never")


def test_serving_levels_come_from_its_own_metrics(published, tmp_path, receiver):
    metrics = ServingMetrics(lambda: None)
    endpoint = "/v1/users/{user_id}/recommendations"
    for _ in range(99):
        metrics.observe(endpoint, 200, 0.0004)
    metrics.observe(endpoint, 503, 0.3)
    metrics.observe("/metrics", 500, 2.0)  # not an API endpoint: counts for nothing
    for _ in range(40):
        metrics.fallbacks.inc()
    server = receiver(body=metrics.exposition())
    settings = copy_home(published, tmp_path / "home", serving_metrics_url=server.url)
    measured = serving_checks(settings)
    assert measured["serving_error_rate"][0] == pytest.approx(0.01)
    assert measured["fallback_share"][0] == pytest.approx(0.4)
    assert 0.0001 < measured["serving_p99_seconds"][0] <= 0.0005
    report = measure(settings, "serving")
    assert [c.level for c in report.breached] == ["fallback_share"]


def test_the_quantile_is_prometheus_histogram_quantile():
    buckets = {0.001: 0.0, 0.01: 0.0, 0.1: 100.0, float("inf"): 100.0}
    assert quantile_from_buckets(buckets, 0.99) == pytest.approx(0.0991)  # as in deploy/prometheus/rules_test.yml
    assert quantile_from_buckets({float("inf"): 0.0}, 0.99) is None
