"""Session-aware answers: events acknowledged by the collector shape the next answer (serving/session.py)."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from serving.config import InvalidSettings, ServingSettings, load_settings
from serving.main import create_app
from tests.services import redis_db  # noqa: F401  (a fixture)

KEY = "test-app-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def stamp(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def wait_until(condition, message, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


@contextmanager
def server(published, tmp_path, name="home", **settings):
    """The real app with the collector on, in its own home, serving a copy of the shared publication."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    if not (home / "published").exists():  # a private copy: a test writes its blocklist there
        shutil.copytree(published.published_dir, home / "published", symlinks=True)
    app = create_app(ServingSettings(home=home, collector_app_key=KEY, reload_interval_seconds=0.2, **settings))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        yield client


def send(client, user, item, kind="click", seconds_ago=0.0, number=[0]):  # noqa: B006  (a running event number)
    number[0] += 1
    event = {"event_id": f"s{number[0]}", "user_id": user, "item_id": item, "event_type": kind,
             "event_ts": stamp(seconds_ago)}  # fmt: skip
    answer = client.post("/v1/events", json=event, headers=AUTH)
    assert answer.status_code == 200, answer.text


def recommend(client, user, **params) -> dict:
    answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 10, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()


def publication(client):
    return client.app.state.store.current


def known_user(client) -> str:
    return str(publication(client).user_ids[0])


def neighbours(client, item, depth=5) -> list[str]:
    live = publication(client)
    row = live.item_rows[item]
    _, rows = live.index.search(live.index.reconstruct(row).reshape(1, -1), depth + 1)
    return [live.item_ids[r] for r in rows[0].tolist() if r >= 0 and r != row][:depth]


def an_item_outside(client, items) -> str:
    """An item not in `items` (a user's list): its neighbours are what a session should bring in."""
    live = publication(client)
    return next(item for item in reversed(live.item_ids) if item not in items)


def test_a_click_blends_the_clicked_items_neighbours_into_a_known_users_list(published, tmp_path):
    with server(published, tmp_path) as client:
        user = known_user(client)
        before = recommend(client, user)
        clicked = an_item_outside(client, {i["item_id"] for i in before["items"]})
        send(client, user, clicked)
        after = recommend(client, user)
    assert after["fallback"] is False and len(after["items"]) == 10
    session_items = [i for i in after["items"] if i["reason"] == f"session:{clicked}"]
    assert session_items, after
    assert {i["item_id"] for i in session_items} <= set(neighbours(client, clicked, depth=30))
    scores = [i["score"] for i in after["items"]]
    assert scores == sorted(scores, reverse=True)


def test_an_item_bought_in_the_session_disappears(published, tmp_path):
    with server(published, tmp_path) as client:
        user = known_user(client)
        top = recommend(client, user)["items"][0]["item_id"]
        send(client, user, top, kind="purchase")
        after = recommend(client, user)
    assert top not in [i["item_id"] for i in after["items"]]
    assert len(after["items"]) == 10


def test_a_new_visitor_with_one_click_gets_session_items_instead_of_the_popular_list(published, tmp_path):
    with server(published, tmp_path) as client:
        popular = recommend(client, "visitor-1")
        clicked = publication(client).item_ids[3]
        send(client, "visitor-1", clicked)
        after = recommend(client, "visitor-1")
    assert popular["fallback"] is True
    assert after["fallback"] is False
    assert after["items"][0]["reason"] == f"session:{clicked}"
    assert after["items"][0]["item_id"] == neighbours(client, clicked, depth=1)[0]
    assert clicked not in [i["item_id"] for i in after["items"]]
    assert len(after["items"]) == 10


def test_exclude_and_the_blocklist_still_apply_to_session_answers(published, tmp_path):
    with server(published, tmp_path) as client:
        clicked = publication(client).item_ids[3]
        first, second = neighbours(client, clicked, depth=2)
        send(client, "visitor-2", clicked)
        blocklist = client.app.state.store.blocklist_path
        try:
            blocklist.write_text(f"{first}\n")
            wait_until(lambda: first in client.app.state.store.blocked, "the blocklist was never read")
            after = recommend(client, "visitor-2", exclude=second)
        finally:
            blocklist.unlink()
    assert {first, second}.isdisjoint(i["item_id"] for i in after["items"])
    assert after["items"][0]["reason"] == f"session:{clicked}"


def test_users_without_session_events_keep_the_c_fast_path(published, tmp_path):
    with server(published, tmp_path) as client:
        live = publication(client)
        assert live.fast_answer is not None, "build the C extension: python setup.py build_ext --inplace"
        calls = []
        original = live.fast_answer
        live.fast_answer = lambda *args: calls.append(args[0]) or original(*args)
        sessions = client.app.state.sessions
        user, other = str(live.user_ids[0]), str(live.user_ids[1])
        recommend(client, user)
        assert (calls, sessions.answers) == ([user], 0)
        send(client, user, live.item_ids[5])
        recommend(client, user)
        recommend(client, other)
    assert calls == [user, other]  # the user with a session took serving/session.py, the other the C path
    assert sessions.answers == 1


def test_session_memory_is_bounded_in_users_and_events_per_user(published, tmp_path):
    with server(published, tmp_path, session_max_users=3, session_max_events=2) as client:
        items = publication(client).item_ids
        for n in range(6):
            for item in items[:4]:
                send(client, f"visitor-{n}", item)
        sessions = client.app.state.sessions
        assert list(sessions.active) == ["visitor-3", "visitor-4", "visitor-5"]  # the least recent went first
        assert all(len(events) == 2 for _, events in sessions.active.values())
        assert recommend(client, "visitor-0")["fallback"] is True  # evicted: the usual answer


def test_session_events_older_than_the_ttl_count_no_more(published, tmp_path):
    with server(published, tmp_path, session_ttl_seconds=1) as client:
        user = known_user(client)
        batch = recommend(client, user)
        send(client, "visitor-old", publication(client).item_ids[3], seconds_ago=5)  # stale on arrival
        assert recommend(client, "visitor-old")["fallback"] is True
        send(client, user, an_item_outside(client, {i["item_id"] for i in batch["items"]}))
        assert recommend(client, user) != batch
        time.sleep(1.1)
        assert recommend(client, user) == batch
        assert user not in client.app.state.sessions.active  # forgotten once nothing is fresh


@pytest.mark.parametrize(
    ("name", "value"), [("session_weight", 1.5), ("session_max_users", 0), ("session_ttl_seconds", 0)]
)
def test_an_out_of_range_session_setting_is_one_clear_line(name, value):
    with pytest.raises(InvalidSettings, match=rf"RECFORGE_{name.upper()}={value!r}: must be"):
        load_settings(ServingSettings, **{name: value})


def test_in_the_scaled_configuration_every_replica_sees_the_session(published, tmp_path, redis_db):  # noqa: F811
    scaled = {"collector_backend": "redis", "collector_redis_url": redis_db}
    with server(published, tmp_path, "a", **scaled) as first, server(published, tmp_path, "b", **scaled) as second:
        clicked = publication(first).item_ids[3]
        send(first, "visitor-r", clicked)
        assert recommend(first, "visitor-r")["items"][0]["reason"] == f"session:{clicked}"
        wait_until(lambda: "visitor-r" in second.app.state.sessions.active, "replica b never heard of the session")
        ranked = [(i["item_id"], i["reason"]) for i in recommend(first, "visitor-r")["items"]]
        assert [(i["item_id"], i["reason"]) for i in recommend(second, "visitor-r")["items"]] == ranked
    import redis

    client = redis.Redis.from_url(redis_db)
    key = "recforge:session:u:visitor-r"
    assert client.llen(key) == 1 and 0 < client.ttl(key) <= 1800
    with server(published, tmp_path, "c", **scaled) as late:  # started after the event: finds it by SCAN
        assert recommend(late, "visitor-r")["items"][0]["reason"] == f"session:{clicked}"


def test_a_session_store_failure_never_unacknowledges_a_stored_event(published, tmp_path, caplog):
    with server(published, tmp_path) as client:

        async def broken(lines):
            raise RuntimeError("session store down")

        client.app.state.sessions.record = broken
        send(client, "visitor-f", publication(client).item_ids[3])  # asserts the 200
        assert recommend(client, "visitor-f")["fallback"] is True
    segments = list((tmp_path / "home" / "landing" / "stream").rglob("*.jsonl"))
    assert any(b'"visitor-f"' in path.read_bytes() for path in segments)
    assert "could not record 1 acknowledged event(s)" in caplog.text


def test_the_neighbour_cache_is_bounded_and_gives_the_direct_searchs_answer(published, tmp_path, monkeypatch):
    from serving import session

    monkeypatch.setattr(session, "NEIGHBOUR_CACHE_ITEMS", 2)
    with server(published, tmp_path) as client:
        live = publication(client)
        cached = session.neighbours_of(live, [1, 2, 3], 10)
        assert list(live._session_neighbours) == [2, 3]
        direct = session.neighbours_of(live, [1, 2, 3], live.top_n + 2)  # deeper than cached: searched directly
    assert [near[: live.top_n + 1] for near, _ in direct] == [near for near, _ in cached]
