import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.publication.publish import current_version, file_facts, publish, switch_current
from serving.config import ServingSettings
from serving.format import MAX_TOP_N
from serving.main import create_app
from serving.publication import Publication, PublicationError
from tests.conftest import copy_home


@contextmanager
def client_for(settings, reload_interval_seconds=0.2, wait_ready=True):
    """A test client on the home's publications; waits until the background load made it ready."""
    # The failure log goes to a directory of its own: the shared homes stay read-only.
    failures = tempfile.mkdtemp(prefix="failure-log-")
    app = create_app(
        ServingSettings(home=settings.home, reload_interval_seconds=reload_interval_seconds, failure_log_dir=failures)
    )
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

        # A corrupt version made live (corrupted before CURRENT names it, so the server cannot have
        # loaded it intact first): the server must refuse it and keep serving the last good one.
        broken = f"{new}-broken"
        shutil.copytree(settings.published_dir / new, settings.published_dir / broken)
        (settings.published_dir / broken / "fallback.parquet").write_bytes(b"garbage")
        switch_current(settings.published_dir, broken)
        deadline = time.monotonic() + 10
        while "checksum of fallback.parquet" not in (client.get("/healthz").json()["last_error"] or ""):
            assert time.monotonic() < deadline, client.get("/healthz").json()
            time.sleep(0.1)
        assert client.get("/readyz").json()["version"] == new


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


def test_readyz_and_metrics_report_the_memory_per_user_of_the_live_lists(published):
    with client_for(published) as client:
        ready = client.get("/readyz").json()
        text = client.get("/metrics").text
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    assert ready["users"] == recs["user_id"].nunique()
    # item row (4) + score (4) + reason code (1-2) per stored item, plus the id and offset per user
    assert 9 * len(recs) / ready["users"] <= ready["list_bytes_per_user"] <= 12 * len(recs) / ready["users"] + 64
    gauge = next(line for line in text.splitlines() if line.startswith("recforge_publication_list_bytes_per_user "))
    per_user = float(gauge.split()[1])
    assert per_user == pytest.approx(ready["list_bytes_per_user"], rel=0.01)


def test_the_noop_endpoint_answers_without_touching_the_publication(settings):
    with client_for(settings, wait_ready=False) as client:
        response = client.get("/v1/noop")
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_an_exclude_list_longer_than_the_limit_is_a_clear_422(published):
    with client_for(published) as client:
        too_many = ",".join(f"i{n}" for n in range(201))
        response = client.get("/v1/users/u000001/recommendations", params={"exclude": too_many})
    assert response.status_code == 422
    assert "exclude names 201 items; at most 200" in response.text


def test_current_naming_a_directory_outside_the_publications_is_refused(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    live = current_version(settings.published_dir)
    outside = tmp_path / "elsewhere"
    shutil.copytree(settings.published_dir / live, outside)
    with client_for(settings) as client:
        (settings.published_dir / "CURRENT").write_text("../../elsewhere\n")
        wait_until(lambda: client.get("/healthz").json()["last_error"] is not None, "the bad CURRENT was not noticed")
        assert "inside the published directory" in client.get("/healthz").json()["last_error"]
        assert client.get("/readyz").json()["version"] == live


def test_lists_that_are_not_sorted_by_user_still_load_correctly(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    directory = settings.published_dir / current_version(settings.published_dir)
    recs = pd.read_parquet(directory / "user_recs.parquet")
    recs.sample(frac=1.0, random_state=0).to_parquet(directory / "user_recs.parquet", index=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = file_facts(directory)
    manifest["files"].pop("manifest.json")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    publication = Publication(directory)
    user = recs["user_id"].iloc[0]
    expected = recs[recs["user_id"] == user].sort_values("rank")["item_id"].tolist()
    assert [r.item_id for r in publication.for_user(user, len(expected))] == expected
    assert publication.n_users == recs["user_id"].nunique()


def resealed_with_user_recs(published, home, edit):
    """A copy of the live publication whose user_recs.parquet `edit(frame)` changed, manifest checksums
    renewed, so that only the change itself is wrong."""
    settings = copy_home(published, home)
    directory = settings.published_dir / current_version(settings.published_dir)
    recs = pd.read_parquet(directory / "user_recs.parquet")
    edit(recs)
    recs.to_parquet(directory / "user_recs.parquet", index=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in file_facts(directory).items() if k != "manifest.json"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_a_publication_whose_lists_name_an_unknown_item_is_refused(published, tmp_path):
    def unknown_item(recs):
        recs.loc[0, "item_id"] = "not-in-the-catalog"

    directory = resealed_with_user_recs(published, tmp_path / "home", unknown_item)
    with pytest.raises(PublicationError, match="lists name item not-in-the-catalog"):
        Publication(directory)


def test_a_catalog_above_the_exact_limit_is_served_from_an_hnsw_index(published, tmp_path):
    settings = copy_home(published, tmp_path / "home", faiss_exact_max_items=50)
    version = publish(settings).version
    manifest = json.loads((settings.published_dir / version / "manifest.json").read_text())
    assert manifest["item_index"]["type"] == "hnsw"
    assert manifest["item_index"]["ef_search"] == settings.faiss_hnsw_ef_search
    with client_for(settings) as client:
        assert client.get("/readyz").json()["item_index"] == "hnsw"
        body = client.get("/v1/items/i000001/similar", params={"k": 5}).json()
    exact = Publication(settings.published_dir / version)
    vectors = np.vstack([exact.index.reconstruct(i) for i in range(exact.index.ntotal)])
    row = exact.item_rows["i000001"]
    truth = [exact.item_ids[i] for i in np.argsort(-(vectors @ vectors[row]))[1:6]]
    found = [item["item_id"] for item in body["items"]]
    assert len(found) == 5 and "i000001" not in found
    assert len(set(found) & set(truth)) >= 4  # approximate, but close on a catalog this small


# --- a new publication swapped in under concurrent load


@contextmanager
def running_server(settings, reload_interval_seconds=0.1):
    """The real ASGI app on uvicorn in a thread, on a free loopback port."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The failure log goes to a directory of its own: the shared homes stay read-only.
    failures = tempfile.mkdtemp(prefix="failure-log-")
    app = create_app(
        ServingSettings(home=settings.home, reload_interval_seconds=reload_interval_seconds, failure_log_dir=failures)
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def clone_live_version(root, name):
    """A new complete version with the live one's files and its own manifest (cheaper than a publish)."""
    live = current_version(root)
    shutil.copytree(root / live, root / name)
    manifest = json.loads((root / name / "manifest.json").read_text())
    manifest["version"] = name
    (root / name / "manifest.json").write_text(json.dumps(manifest))
    return name


def test_swapping_publications_under_concurrent_load_gives_only_200_answers(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    users = pd.read_parquet(root / current_version(root) / "user_recs.parquet")["user_id"].unique()[:50].tolist()
    new_versions = [clone_live_version(root, f"29990101T00000{i}000000Z-v9") for i in range(3)]
    statuses, versions_seen, stop = [], set(), threading.Event()

    with running_server(settings) as base:
        wait_until(lambda: requests_get(f"{base}/readyz")[0] == 200, "the server never became ready")

        def hammer(offset):
            with httpx.Client(base_url=base, timeout=10) as client:
                n = offset
                while not stop.is_set():
                    path = (
                        f"/v1/users/{users[n % len(users)]}/recommendations?k=5"
                        if n % 3
                        else f"/v1/items/i00000{1 + n % 9}/similar?k=3"
                    )
                    response = client.get(path)
                    statuses.append(response.status_code)
                    versions_seen.add(response.json().get("version"))
                    n += 1

        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for worker in workers:
            worker.start()
        try:
            for version in new_versions:
                time.sleep(0.4)
                switch_current(root, version)
                live = lambda v=version: requests_get(f"{base}/readyz")[1].get("version") == v  # noqa: E731
                wait_until(live, f"{version} never went live")
            # A broken publication during the load is refused without a single failed answer.
            broken = clone_live_version(root, "29990101T000009000000Z-v9")
            (root / broken / "fallback.parquet").write_bytes(b"broken")
            switch_current(root, broken)
            time.sleep(0.5)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=10)

    assert len(statuses) > 200, "the load was too light to mean anything"
    assert set(statuses) == {200}
    assert set(new_versions) <= versions_seen and broken not in versions_seen


def requests_get(url):
    response = httpx.get(url, timeout=5)
    return response.status_code, response.json()


def test_exclude_may_be_repeated_and_percent_encoded(published):
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    user = recs["user_id"].iloc[0]
    ranked = recs[recs["user_id"] == user].sort_values("rank")["item_id"].tolist()
    with client_for(published) as client:
        query = f"k=%33&exclude={ranked[0]}%2C{ranked[1]}&exclude={ranked[3]}&unrelated=x+y"
        body = client.get(f"/v1/users/{user}/recommendations?{query}").json()
    assert [item["item_id"] for item in body["items"]] == [ranked[2], ranked[4], ranked[5]]


# --- starting on the newest verified version when CURRENT's is refused


def corrupted_clone(root, name):
    clone_live_version(root, name)
    (root / name / "fallback.parquet").write_bytes(b"broken")
    return name


def test_a_server_started_on_a_broken_current_serves_the_newest_older_version_that_verifies(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    good = current_version(root)
    new = clone_live_version(root, "29990101T000003000000Z-v9")  # newer than CURRENT's: not a fallback
    corrupted_clone(root, "29990101T000001000000Z-v9")  # newer than good, older than CURRENT's: skipped
    refused = corrupted_clone(root, "29990101T000002000000Z-v9")
    switch_current(root, refused)
    with client_for(settings) as client:
        ready = client.get("/readyz").json()
        assert (ready["version"], ready["serving_fallback_version"], ready["current_refused"]) == (good, True, refused)
        health = client.get("/healthz").json()
        assert (health["version"], health["serving_fallback_version"], health["current_refused"]) == (
            good,
            True,
            refused,
        )
        assert health["last_error"].startswith(f"refused publication {refused}: {refused}: fallback.parquet ")

        # CURRENT is still watched: a good new version goes live and the fallback flags clear.
        switch_current(root, new)
        wait_until(lambda: client.get("/readyz").json()["version"] == new, "the good new version never went live")
        ready = client.get("/readyz").json()
        assert (ready["serving_fallback_version"], ready["current_refused"]) == (False, None)


def test_with_no_older_version_that_verifies_the_server_is_not_ready_and_names_the_refused_one(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    only = current_version(root)
    (root / only / "fallback.parquet").write_bytes(b"broken")
    with client_for(settings, wait_ready=False) as client:
        wait_until(
            lambda: client.get("/healthz").json()["last_error"] is not None, "the broken CURRENT was not noticed"
        )
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {
            "ready": False,
            "version": None,
            "serving_fallback_version": False,
            "current_refused": only,
        }


def test_errors_name_paths_relative_to_the_published_directory(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    broken = clone_live_version(root, "29990101T000001000000Z-v9")
    (root / broken / "items.parquet").unlink()  # an error from the file system names the path it tried
    with client_for(settings) as client:
        switch_current(root, broken)
        wait_until(
            lambda: client.get("/healthz").json()["last_error"] is not None, "the broken version was not refused"
        )
        error = client.get("/healthz").json()["last_error"]
    assert str(tmp_path) not in error and str(tmp_path.resolve()) not in error
    assert f"{broken}: items.parquet listed in the manifest is missing" in error


def test_a_publication_promising_more_than_the_api_allows_is_refused(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    deep = clone_live_version(root, "29990101T000001000000Z-v9")
    manifest = json.loads((root / deep / "manifest.json").read_text())
    (root / deep / "manifest.json").write_text(json.dumps({**manifest, "top_n": MAX_TOP_N + 1}))
    with pytest.raises(PublicationError, match=rf"top_n {MAX_TOP_N + 1} is outside 1..{MAX_TOP_N}"):
        Publication(root / deep)


def test_an_unknown_id_longer_than_every_published_one_is_looked_up_without_copying_the_ids(published):
    """searchsorted with a key wider than the array's dtype first copies the whole array (4 ms per request
    at 200,000 users): such an id cannot be published, so it is answered unknown at once."""
    import tracemalloc

    live = Publication(published.published_dir / current_version(published.published_dir))
    longer = "x" * (live.user_ids.dtype.itemsize // 4 + 5)
    tracemalloc.start()
    try:
        assert live.user_position(longer) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < live.user_ids.nbytes / 2
    assert live.user_position(str(live.user_ids[-1])) == len(live.user_ids) - 1  # the longest width still found


def test_the_server_process_freezes_its_startup_heap_before_it_serves(tmp_path, monkeypatch):
    """python -m serving / recforge serve: what exists at start is out of the collector's full walks
    (serving/__main__.py says why); the freeze happens before uvicorn takes the first request."""
    import gc

    import serving.__main__ as entry
    from serving.config import get_settings

    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path))
    frozen_when_serving = []
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: frozen_when_serving.append(gc.get_freeze_count()))
    get_settings.cache_clear()
    gc.unfreeze()
    try:
        entry.main()
    finally:
        gc.unfreeze()
        get_settings.cache_clear()
    assert len(frozen_when_serving) == 1 and frozen_when_serving[0] > 10_000
