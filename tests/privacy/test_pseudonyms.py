"""Keyed pseudonyms (serving/pseudonyms.py): ingest stores none of the ids apps send; serving and the
collector hash the same way; a wrong or missing key is one settings line and never shown."""

import json
import logging
import shutil
import stat
from contextlib import contextmanager
from datetime import timedelta

import orjson
import pandas as pd
import pytest

from pipelines.ingest import ingest_interval
from pipelines.privacy.scan import find_ids
from pipelines.settings import InvalidSettings, Settings
from pipelines.warehouse.connection import connect
from serving.config import ServingSettings, load_settings
from serving.pseudonyms import Pseudonymizer, is_pseudonym
from tests.conftest import copy_home
from tests.ingest.test_ingest import DAY, event, write_day
from tests.serving.test_collector import AUTH, KEY, closed_segments
from tests.serving.test_serving import resealed_with_user_recs, wait_until

SECRET = "k" * 24 + "-pseudonym-secret"
PSEUDO = {"pseudonymize_user_ids": True, "pseudonym_key": SECRET}
HASH = Pseudonymizer(SECRET.encode())


def test_a_pseudonym_is_keyed_idempotent_and_a_valid_id():
    from serving.ids import id_violation

    assert HASH("u1") == HASH("u1") != Pseudonymizer(b"x" * 32)("u1")
    assert HASH(HASH("u1")) == HASH("u1") and is_pseudonym(HASH("u1"))
    assert id_violation(HASH("u1")) is None and SECRET not in repr(HASH)


@pytest.fixture
def pseudonymised_home(tmp_path, simulated) -> Settings:
    """The simulated catalog, no landing files, pseudonymisation on."""
    settings = copy_home(simulated, tmp_path / "home", **PSEUDO)
    shutil.rmtree(settings.landing_dir / "events")
    return settings


def test_pseudonymised_ingest_stores_no_raw_user_id_anywhere_in_the_warehouse(pseudonymised_home, caplog):
    settings = pseudonymised_home
    lines = [
        json.dumps(event(1, user_id="alice-1")),
        json.dumps(event(2, user_id="bob-2", item_id="i000002")),
        json.dumps(event(3, user_id="carol-3", event_type="hover")),  # quarantined, user id readable
        '{"event_id": "t4", "user_id": "dave-4", ',  # malformed: no user id can be read
    ]
    write_day(settings, DAY, lines)
    with caplog.at_level(logging.DEBUG):
        result = ingest_interval(settings, DAY, DAY + timedelta(days=1))
    assert (result.rows_accepted, result.rows_quarantined) == (2, 2)
    raw_ids = ["alice-1", "bob-2", "carol-3", "dave-4"]
    hits = [hit for hit in find_ids(settings.home, raw_ids) if not hit.path.is_relative_to(settings.landing_dir)]
    assert hits == []  # the landing file keeps them until retention or a forget request
    with connect(settings) as con:
        users = {u for (u,) in con.execute("select user_id from raw.events").fetchall()}
        quarantined = dict(con.execute("select reason, raw from quarantine.events").fetchall())
    assert users == {HASH("alice-1"), HASH("bob-2")}
    assert json.loads(quarantined["unknown_event_type"])["user_id"] == HASH("carol-3")
    assert quarantined["malformed_json"].startswith("[withheld:")
    assert SECRET not in caplog.text


def test_serving_answers_a_raw_id_with_its_pseudonyms_list_on_the_fast_and_the_python_path(published, tmp_path):
    directory = resealed_with_user_recs(published, tmp_path / "home", lambda recs: recs.update(
        {"user_id": recs["user_id"].map(HASH)}))  # fmt: skip
    recs = pd.read_parquet(directory / "user_recs.parquet")
    raw = sorted(
        {u for u in pd.read_parquet(published.published_dir / directory.name / "user_recs.parquet")["user_id"]}
    )
    user = raw[5]
    expected = recs[recs["user_id"] == HASH(user)].sort_values("rank")["item_id"].head(5).tolist()
    settings = Settings(home=tmp_path / "home", **PSEUDO)
    with _client(settings) as client:
        fast = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        python = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "exclude": "no-such-item"}).json()
        by_pseudonym = client.get(f"/v1/users/{HASH(user)}/recommendations", params={"k": 5}).json()
        bad = client.get("/v1/users/has%20space/recommendations")
    for body in (fast, python):
        assert body["user_id"] == user and body["fallback"] is False
        assert [item["item_id"] for item in body["items"]] == expected
    assert [item["item_id"] for item in by_pseudonym["items"]] == expected
    assert bad.status_code == 422


def test_the_collector_stores_the_pseudonym_so_stream_and_daily_ingest_agree(tmp_path):
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from tests.serving.test_collector import event as collected_event

    app = create_app(ServingSettings(home=tmp_path, collector_app_key=KEY, **PSEUDO))
    with TestClient(app) as client:
        answer = client.post("/v1/events", json=[collected_event(1), collected_event(2, user_id=42)], headers=AUTH)
    assert answer.status_code == 200
    root = tmp_path / "landing" / "stream"
    stored = [orjson.loads(line) for path in closed_segments(root) for line in path.read_bytes().splitlines()]
    assert [e["user_id"] for e in stored] == [HASH("u1"), HASH("42")]


@pytest.mark.parametrize("model", [Settings, ServingSettings])
def test_pseudonymisation_without_a_key_is_one_settings_line(model, monkeypatch):
    monkeypatch.setenv("RECFORGE_PSEUDONYMIZE_USER_IDS", "true")
    with pytest.raises(InvalidSettings, match=r"^invalid setting: RECFORGE_PSEUDONYMIZE_USER_IDS=true needs a secret"):
        load_settings(model)


@pytest.mark.parametrize("model", [Settings, ServingSettings])
def test_a_short_key_is_refused_and_never_shown(model, monkeypatch):
    monkeypatch.setenv("RECFORGE_PSEUDONYMIZE_USER_IDS", "true")
    monkeypatch.setenv("RECFORGE_PSEUDONYM_KEY", "too-short-secret")
    with pytest.raises(InvalidSettings) as error:
        load_settings(model)
    assert "RECFORGE_PSEUDONYM_KEY=<hidden>" in str(error.value) and "too-short-secret" not in str(error.value)
    assert "\n" not in str(error.value)


def test_a_key_file_others_can_read_or_too_short_is_refused_and_never_shown(tmp_path, monkeypatch):
    path = tmp_path / "pseudonym.key"
    path.write_text(SECRET + "\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP)
    monkeypatch.setenv("RECFORGE_PSEUDONYMIZE_USER_IDS", "true")
    monkeypatch.setenv("RECFORGE_PSEUDONYM_KEY_FILE", str(path))
    with pytest.raises(InvalidSettings, match="readable by its owner only") as error:
        load_settings(Settings)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert load_settings(Settings).pseudonymizer()("u1") == HASH("u1")  # the file's secret is the variable's
    path.write_text("short\n")
    with pytest.raises(InvalidSettings, match="at least 32 characters") as short:
        load_settings(ServingSettings)
    assert SECRET not in str(error.value) and "short\n" not in str(short.value)


@contextmanager
def _client(settings: Settings):
    """A test client with the server's pseudonymisation on, once the publication is loaded."""
    from fastapi.testclient import TestClient

    from serving.main import create_app

    app = create_app(ServingSettings(home=settings.home, reload_interval_seconds=0.2, **PSEUDO))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        yield client
