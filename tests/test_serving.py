import subprocess
import sys
import time
from contextlib import contextmanager

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.publish import current_version, publish
from serving.config import ServingSettings
from serving.main import create_app
from tests.conftest import copy_home


@contextmanager
def client_for(settings, reload_interval_seconds=0.2, wait_ready=True):
    """A test client on the home's publications; waits until the background load made it ready."""
    app = create_app(ServingSettings(home=settings.home, reload_interval_seconds=reload_interval_seconds))
    with TestClient(app) as client:
        if wait_ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        yield client


def wait_until(condition, message, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_recommendations_are_the_published_top_k_for_the_user(published):
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    user = recs["user_id"].iloc[0]
    expected = recs[recs["user_id"] == user].sort_values("rank")["item_id"].head(5).tolist()
    with client_for(published) as client:
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert [item["item_id"] for item in body["items"]] == expected
    assert body["version"] == current_version(published.published_dir)
    assert body["fallback"] is False


def test_an_unknown_user_gets_the_fallback_list_flagged(published):
    fallback = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "fallback.parquet")
    with client_for(published) as client:
        body = client.get("/v1/users/never-seen/recommendations", params={"k": 3}).json()
    assert body["fallback"] is True
    assert [item["item_id"] for item in body["items"]] == fallback["item_id"].head(3).tolist()
    assert {item["reason"] for item in body["items"]} == {"popular"}


def test_similar_items_exclude_the_item_itself(published):
    with client_for(published) as client:
        body = client.get("/v1/items/i000001/similar", params={"k": 4}).json()
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 4 and len(set(ids)) == 4 and "i000001" not in ids
    assert body["items"][0]["reason"] == "similar_to:i000001"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/users/u000001/recommendations?k=0", 422, "k must be between 1 and"),
        ("/v1/users/u000001/recommendations?k=100000", 422, "k must be between 1 and"),
        ("/v1/users/u000001/recommendations?k=ten", 422, "int"),
        ("/v1/users/bad id!/recommendations", 422, "pattern"),
        ("/v1/users/..%2F..%2Fetc%2Fpasswd/recommendations", 404, "Not Found"),
        ("/v1/items/no-such-item/similar", 404, "not in publication"),
    ],
)
def test_bad_requests_get_a_clear_4xx(published, path, status, message):
    with client_for(published) as client:
        response = client.get(path)
    assert response.status_code == status
    assert message in response.text


def test_not_ready_until_a_publication_is_loaded(settings):
    with client_for(settings, wait_ready=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.get("/v1/users/u1/recommendations").status_code == 503


def test_a_new_publication_is_swapped_in_and_a_broken_one_refused(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    old = current_version(settings.published_dir)
    with client_for(settings) as client:
        assert client.get("/readyz").json()["version"] == old
        new = publish(settings).version
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["version"] != new and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json()["version"] == new

        # Corrupt the next publication after it is written: the server must refuse it.
        broken = publish(settings).version
        (settings.published_dir / broken / "fallback.parquet").write_bytes(b"garbage")
        time.sleep(1.0)
        assert client.get("/readyz").json()["version"] == new
        assert "checksum of fallback.parquet" in client.get("/healthz").json()["last_error"]


def test_serving_imports_none_of_the_pipeline_stack():
    code = (
        "import sys, serving.main, serving.publication, serving.__main__;"
        "heavy = [m for m in ('airflow', 'dbt', 'great_expectations', 'mlflow', 'pipelines') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_excluded_items_are_dropped_and_the_list_refilled_from_further_down(published):
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    user = recs["user_id"].iloc[0]
    ranked = recs[recs["user_id"] == user].sort_values("rank")["item_id"].tolist()
    with client_for(published) as client:
        body = client.get(
            f"/v1/users/{user}/recommendations", params=[("k", 4), ("exclude", f"{ranked[0]},{ranked[2]}")]
        ).json()
    assert [item["item_id"] for item in body["items"]] == [ranked[1], ranked[3], ranked[4], ranked[5]]


def test_metrics_count_requests_by_endpoint_fallbacks_and_name_the_live_version(published):
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    known = recs["user_id"].iloc[0]
    with client_for(published) as client:
        client.get(f"/v1/users/{known}/recommendations")
        client.get("/v1/users/stranger/recommendations")
        client.get(f"/v1/users/{known}/recommendations?k=0")
        text = client.get("/metrics").text
    version = current_version(published.published_dir)
    assert 'recforge_requests_total{endpoint="/v1/users/{user_id}/recommendations",status="200"} 2.0' in text
    assert 'recforge_requests_total{endpoint="/v1/users/{user_id}/recommendations",status="422"} 1.0' in text
    assert "recforge_fallback_total 1.0" in text
    assert f'recforge_live_publication_info{{version="{version}"}} 1.0' in text
    assert 'recforge_request_latency_seconds_bucket{endpoint="/v1/users/{user_id}/recommendations",le="0.01"}' in text
    age = float(next(line.split()[1] for line in text.splitlines() if line.startswith("recforge_live_publication_age")))
    assert 0 <= age < 24 * 3600


def test_an_item_blocked_after_publication_disappears_within_seconds(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    recs = pd.read_parquet(settings.published_dir / current_version(settings.published_dir) / "user_recs.parquet")
    user = recs["user_id"].iloc[0]
    with client_for(settings) as client:
        first = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()["items"][0]["item_id"]
        similar_to = client.get(f"/v1/items/{first}/similar", params={"k": 1}).json()["items"][0]["item_id"]
        (settings.published_dir / "blocklist.txt").write_text(f"{first}  # recalled\n{similar_to}\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            items = [
                i["item_id"] for i in client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()["items"]
            ]
            if first not in items:
                break
            time.sleep(0.1)
        assert first not in items and len(items) == 5
        similar = [i["item_id"] for i in client.get(f"/v1/items/{first}/similar", params={"k": 3}).json()["items"]]
        assert similar_to not in similar and len(similar) == 3
        fallback = client.get("/v1/users/stranger/recommendations", params={"k": 20}).json()["items"]
        assert not {first, similar_to} & {i["item_id"] for i in fallback}
