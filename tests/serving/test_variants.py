"""Experiments in serving (serving/variants.py): routing by variant, holdback, shadow, canary rollback,
memory per variant, hostile state files. Variant publications are copies of the published one under their
own version names, so the answer's `version` says which publication answered."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.publication.publish import current_version
from serving.config import InvalidSettings, ServingSettings, load_settings
from serving.experiments import HOLDBACK, STATE_FILE, Assignment, read_state_file
from serving.format import MANIFEST
from serving.main import create_app
from serving.publication import Publication
from serving.variants import CTR_DROP, ERROR_RATE, P99, CanaryMonitor, SlateClicks
from tests.serving.process import serving_process
from tests.serving.test_impressions import landed
from tests.serving.test_serving import wait_until

CHALLENGER = "20000101T000000000000Z-v7"
SHADOW = "20000101T000000000001Z-v8"
NAME = "home-ab"


@pytest.fixture(scope="module")
def live(published) -> Publication:
    return Publication(published.published_dir / current_version(published.published_dir))


def add_versions(home) -> None:
    """Two more complete versions beside CURRENT's: copies of it under the challenger's and the shadow's names."""
    live_version = current_version(home / "published")
    for version in (CHALLENGER, SHADOW):
        shutil.copytree(home / "published" / live_version, home / "published" / version)
        manifest = json.loads((home / "published" / version / MANIFEST).read_text())
        (home / "published" / version / MANIFEST).write_text(json.dumps({**manifest, "version": version}))


@pytest.fixture
def home(published, tmp_path):
    """The published home plus two more complete versions (copies under their own names)."""
    target = tmp_path / "home"
    shutil.copytree(published.published_dir, target / "published")
    add_versions(target)
    return target


def write_state(home, live_version: str, **changes) -> dict:
    """A running experiment as `recforge experiments start` writes it: control on CURRENT's version, a
    challenger, a holdback, a shadow, 10% of users outside."""
    now = datetime.now(UTC)
    assignment = Assignment(NAME, "s1", (("control", 0.4), ("challenger", 0.4)), 0.1, shadow=("shadowed",))
    entry = {
        "status": "running",
        "started_at": now.isoformat(),
        "assignment": assignment.to_json(),
        "publications": {"control": live_version, "challenger": CHALLENGER, "shadowed": SHADOW},
        "canary_rollback": {},
        "start": (now - timedelta(days=1)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    } | changes
    path = home / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({NAME: entry}))
    return entry


@contextmanager
def client_for(home, **settings):
    values = {"reload_interval_seconds": 0.1, "impressions_flush_seconds": 60.0, **settings}
    with TestClient(create_app(ServingSettings(home=home, **values)), raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        wait_until(lambda: client.get("/experimentz").json()["experiments"] or client.get("/experimentz").json()[
            "problems"], "the router never read the state")  # fmt: skip
        yield client


def answers_for(client, live, users: int = 300, **params) -> list[dict]:
    return [client.get(f"/v1/users/{u}/recommendations", params={"k": 5, **params}).json()
            for u in map(str, live.user_ids[:users])]  # fmt: skip


def test_each_user_is_answered_by_their_variants_publication(home, live):
    entry = write_state(home, live.version)
    assignment = Assignment.from_json(entry["assignment"])
    with client_for(home) as client:
        answers = answers_for(client, live)
    seen = set()
    for body in answers:
        expected = assignment.variant(body["user_id"], datetime.now(UTC))
        seen.add(expected)
        if expected is None:  # outside the experiment: CURRENT, as without experiments
            assert (body["experiment"], body["variant"], body["version"]) == (None, None, live.version)
            continue
        assert (body["experiment"], body["variant"]) == (NAME, expected)
        assert body["version"] == {"control": live.version, "challenger": CHALLENGER, HOLDBACK: live.version}[expected]
        assert body["fallback"] == (expected == HOLDBACK)
    assert seen == {"control", "challenger", HOLDBACK, None}


def test_holdback_users_get_the_popularity_fallback(home, live):
    write_state(home, live.version)
    with client_for(home) as client:
        held = [b for b in answers_for(client, live) if b["variant"] == HOLDBACK]
    popular = [live.item_ids[row] for row in live.fallback_items[:5]]
    assert held and all([i["item_id"] for i in b["items"]] == popular for b in held)
    assert all(i["reason"] == "popular" for b in held for i in b["items"])


def test_a_shadow_variant_is_logged_for_the_same_request_and_never_shown(home, live):
    write_state(home, live.version)
    with client_for(home) as client:
        answers = answers_for(client, live) + answers_for(client, live, exclude=live.item_ids[0])
    assert all(b["variant"] != "shadowed" and b["version"] != SHADOW for b in answers)
    rows = landed(home)
    shadow, shown = rows[rows["shadow"]], rows[~rows["shadow"]]
    in_experiment = {b["request_id"] for b in answers if b["experiment"] == NAME}
    assert set(shadow["request_id"]) == in_experiment  # one shadow slate per answer of the experiment
    assert set(shadow["variant"]) == {"shadowed"} and set(shadow["version"]) == {SHADOW}
    assert shadow["propensities"].isna().all()
    assert "shadowed" not in set(shown["variant"].dropna()) and SHADOW not in set(shown["version"])
    # the shadow's slate is what its publication holds for the user (same k, same exclusions)
    row = shadow.iloc[0]
    position = live.user_position(row["user_id"])
    start = int(live.offsets[position])
    expected = [live.item_ids[r] for r in live.rec_items[start : start + 6] if live.item_ids[r] != live.item_ids[0]]
    assert list(row["item_ids"]) == expected[: len(row["item_ids"])] and len(row["item_ids"]) == 5


def test_impressions_record_experiment_and_variant(home, live):
    write_state(home, live.version)
    with client_for(home) as client:
        answers = answers_for(client, live, users=100)
    shown = landed(home).query("not shadow").set_index("request_id")
    for body in answers:
        logged = shown.loc[body["request_id"]]
        assert (logged["experiment"], logged["variant"], logged["version"]) == (
            body["experiment"], body["variant"], body["version"]
        )  # fmt: skip


def test_memory_per_variant_is_reported(home, live):
    write_state(home, live.version)
    with client_for(home) as client:
        status = client.get("/experimentz").json()
        metrics = client.get("/metrics").text
    variants = {v["variant"]: v for v in status["experiments"][NAME]["variants"]}
    assert variants["control"]["shares_live_publication"] and not variants["challenger"]["shares_live_publication"]
    assert variants["challenger"]["memory_bytes"] > live.list_bytes and variants["shadowed"]["shadow"]
    assert (
        status["variant_memory_bytes"] == variants["challenger"]["memory_bytes"] + variants["shadowed"]["memory_bytes"]
    )
    line = next(x for x in metrics.splitlines() if x.startswith("recforge_variant_memory_bytes{") and "challenger" in x)
    assert float(line.split()[-1]) == variants["challenger"]["memory_bytes"]
    assert (
        f'recforge_variant_memory_bytes{{experiment="{NAME}",variant="control",version="{live.version}"}} 0.0'
        in metrics
    )


HOSTILE = {
    "bad_json": (lambda path: path.write_text("{not json"), "unreadable experiment state"),
    "unknown_version": (
        lambda path: path.write_text(
            json.dumps(
                {
                    NAME: {
                        **json.loads(path.read_text())[NAME],
                        "publications": {
                            "control": "20000101T000000000009Z-v1",
                            "challenger": CHALLENGER,
                            "shadowed": SHADOW,
                        },
                    }
                }
            )
        ),
        "variant 'control': publication 20000101T000000000009Z-v1 refused",
    ),  # fmt: skip
    "shares_above_one": (
        lambda path: path.write_text(path.read_text().replace('"control", 0.4', '"control", 0.9')),
        "shares sum to 1.4, more than 1",
    ),
    "not_an_object": (lambda path: path.write_text("[1, 2]"), "not a JSON object"),
    "tampered_variant": (  # verified like CURRENT: a file that no longer matches its manifest is refused
        lambda path: (path.parent.parent / "published" / CHALLENGER / "fallback.parquet").open("ab").write(b"x"),
        f"variant 'challenger': publication {CHALLENGER} refused",
    ),
    "bad_assignment": (
        lambda path: path.write_text(json.dumps({NAME: {"status": "running", "assignment": 7}})),
        "experiment 'home-ab': assignment: unreadable",
    ),  # fmt: skip
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_state_file_is_named_and_everyone_gets_current(home, live, kind):
    write_state(home, live.version)
    spoil, message = HOSTILE[kind]
    spoil(home / STATE_FILE)
    with client_for(home) as client:
        answers = answers_for(client, live, users=40)
        problems = client.get("/experimentz").json()["problems"]
        metrics = client.get("/metrics").text
    assert len(problems) == 1 and message in problems[0] and str(home) not in problems[0], problems
    assert all(b["experiment"] is None and b["version"] == live.version and b["items"] for b in answers)
    assert "recforge_experiment_state_problems 1.0" in metrics


def canary_state(home, live, **limits):
    schedule = [[(datetime.now(UTC) - timedelta(days=1)).isoformat(), 0.4]]
    entry = write_state(home, live.version, canary_rollback=limits)
    entry["assignment"] = {**entry["assignment"], "canary": "challenger", "schedule": schedule}
    (home / STATE_FILE).write_text(json.dumps({NAME: entry}))
    return Assignment.from_json(entry["assignment"])


def test_a_canary_failing_its_error_rate_is_rolled_back_for_every_replica(home, live):
    assignment = canary_state(home, live, max_error_rate=0.05)
    settings = {"canary_min_requests": 10, "canary_window_requests": 20}
    with client_for(home, **settings) as client:
        broken = client.app.state.router._held[CHALLENGER]

        def fail(*args, **kwargs):
            raise RuntimeError("the canary's publication is broken")

        broken.fast_answer, broken.user_slate = None, fail  # an injected fault in the canary only
        users = [str(u) for u in live.user_ids[:300]]
        canary_users = [u for u in users if assignment.variant(u, datetime.now(UTC)) == "challenger"]
        statuses = [client.get(f"/v1/users/{u}/recommendations").status_code for u in canary_users[:12]]
        # the window judges nothing before it holds canary_min_requests answers; the periodic refresh that
        # judges it may then roll back before the last two, which control answers
        assert statuses[:10] == [500] * 10 and set(statuses[10:]) <= {200, 500}
        wait_until(lambda: "rollback" in read_state_file(home / STATE_FILE)[NAME], "the canary was never rolled back")
        wait_until(lambda: client.get("/experimentz").json()["experiments"][NAME]["shares"]["challenger"] == 0, "")
        after = [client.get(f"/v1/users/{u}/recommendations").json() for u in canary_users[:12]]
        metrics = client.get("/metrics").text
    rollback = read_state_file(home / STATE_FILE)[NAME]["rollback"]
    assert rollback["variant"] == "challenger" and rollback["guardrail"] == ERROR_RATE
    assert "error rate 100.00% over the last" in rollback["reason"]
    assert all(b["variant"] == "control" and b["version"] == live.version for b in after)
    assert (
        f'recforge_canary_rollbacks_total{{experiment="{NAME}",guardrail="{ERROR_RATE}",variant="challenger"}} 1.0'
        in metrics
    )
    # a restarted server (or another replica) reads the rollback and keeps the canary at 0
    with client_for(home, **settings) as restarted:
        again = [restarted.get(f"/v1/users/{u}/recommendations").json() for u in canary_users[:12]]
        assert restarted.get("/experimentz").json()["experiments"][NAME]["rolled_back"]["variant"] == "challenger"
    assert all(b["variant"] == "control" for b in again)


KEY = "test-app-key-0123456789"
# the CTR guardrail alone judges: p99 set out of reach of a test client's first, slow answers
CTR_SETTINGS = {
    "canary_min_requests": 20,
    "canary_window_requests": 500,
    "canary_max_p99_seconds": 30.0,
    "collector_app_key": KEY,
}


def serve_and_click(client, live, click_share: dict[str, float]) -> dict[str, int]:
    """Every user's recommendations once, then a click (through the collector) on the first `click_share[arm]`
    of each arm's slates; returns the slates per arm."""
    slates: dict[str, list[str]] = {}
    for user in map(str, live.user_ids):
        answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert answer.status_code == 200
        slates.setdefault(answer.json()["variant"], []).append((user, answer.headers["x-request-id"]))
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    clicks = [
        {"event_id": f"c-{request_id}", "user_id": user, "item_id": str(live.item_ids[0]), "event_type": "click",
         "event_ts": now, "context": {"request_id": request_id}}
        for arm, served in slates.items() for user, request_id in served[: int(len(served) * click_share.get(arm, 0))]
    ]  # fmt: skip
    answer = client.post("/v1/events", json=clicks, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    return {arm: len(served) for arm, served in slates.items()}


def test_a_canary_whose_slates_draw_fewer_clicks_is_rolled_back_on_its_ctr(home, live):
    """The CTR guardrail from the collector's clicks: control slates clicked half the time, the canary's never."""
    canary_state(home, live, max_ctr_drop=0.2)
    with client_for(home, **CTR_SETTINGS) as client:
        shown = serve_and_click(client, live, {"control": 0.5, "challenger": 0.0})
        assert min(shown["control"], shown["challenger"]) >= 20
        wait_until(lambda: "rollback" in read_state_file(home / STATE_FILE)[NAME], "the canary was never rolled back")
        metrics = client.get("/metrics").text
    rollback = read_state_file(home / STATE_FILE)[NAME]["rollback"]
    assert rollback["variant"] == "challenger" and rollback["guardrail"] == CTR_DROP
    assert "click-through 0.00% over the last" in rollback["reason"] and "of the control's 50" in rollback["reason"]
    assert f'guardrail="{CTR_DROP}",variant="challenger"}} 1.0' in metrics


def test_a_canary_clicked_as_often_as_its_control_keeps_running(home, live):
    canary_state(home, live, max_ctr_drop=0.2)
    with client_for(home, **CTR_SETTINGS) as client:
        router = client.app.state.router
        serve_and_click(client, live, {"control": 0.5, "challenger": 0.5})
        clicks = router._clicks[NAME]
        assert clicks.clicked["control"] > 0 and clicks.clicked["challenger"] > 0  # the collector credited both
        refreshes = 0
        while refreshes < 5:  # several watcher passes judge the window
            router.refresh(client.app.state.store)
            refreshes += 1
    assert "rollback" not in read_state_file(home / STATE_FILE)[NAME]


def test_slate_clicks_count_each_slate_once_forget_the_oldest_and_need_significance():
    clicks = SlateClicks(window=4)
    for n in range(4):
        clicks.served("canary", b"c%d" % n)
        clicks.served("control", b"k%d" % n)
    assert clicks.click(b"c0") and not clicks.click(b"c0")  # a second click on one slate counts once
    assert not clicks.click(b"someone-elses-slate")
    clicks.served("canary", b"c4")  # c0, clicked, leaves the window
    assert (clicks.shown["canary"], clicks.clicked["canary"]) == (4, 0)
    assert not clicks.click(b"c0")  # too late: its slate has left the window
    assert clicks.breach("canary", "control", min_slates=5, max_drop=0.2) is None  # too few slates yet
    for request_id in (b"k0", b"k1"):
        clicks.click(request_id)
    # 0 of 4 against 2 of 4: below the floor, but not significantly on four slates
    assert clicks.breach("canary", "control", min_slates=4, max_drop=0.2) is None
    big = SlateClicks(window=1000)
    for n in range(400):
        big.served("canary", b"c%d" % n)
        big.served("control", b"k%d" % n)
        if n % 2:
            big.click(b"k%d" % n)
        if n % 5 == 0:
            big.click(b"c%d" % n)
    guardrail, why = big.breach("canary", "control", min_slates=100, max_drop=0.2)
    assert (
        guardrail == CTR_DROP and "click-through 20.00% over the last 400 slates < 80% of the control's 50.00%" in why
    )


def test_the_p99_guardrail_judges_the_window_once_it_holds_enough_answers():
    monitor = CanaryMonitor(window=100)
    for _ in range(98):
        monitor.observe(0.001, False)
    assert monitor.breach(min_requests=100, max_error_rate=0.5, max_p99_seconds=0.01) is None  # too few yet
    monitor.observe(0.5, False)
    monitor.observe(0.5, False)
    guardrail, why = monitor.breach(min_requests=100, max_error_rate=0.5, max_p99_seconds=0.01)
    assert guardrail == P99 and "> 10.0 ms" in why
    assert CanaryMonitor(10).breach(1, 0.5, 1.0) is None  # empty window: nothing to judge


def test_a_user_gets_the_same_variant_from_two_server_processes(home, live):
    write_state(home, live.version)
    users = [str(u) for u in live.user_ids[:60]]
    seen = []
    for _ in range(2):
        with serving_process(home, {"RECFORGE_RELOAD_INTERVAL_SECONDS": "0.1", "RECFORGE_IMPRESSIONS_SINK": "off"}) as (
            _,
            port,
        ):
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/experimentz").json()["experiments"], "no experiment routed")  # noqa: B023
            seen.append([httpx.get(f"{url}/v1/users/{u}/recommendations").json()["variant"] for u in users])
    assert seen[0] == seen[1] and {"control", "challenger", HOLDBACK} <= set(seen[0])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"exploration_epsilon": 1.0}, "RECFORGE_EXPLORATION_EPSILON=1.0: must be a finite number in [0, 1)"),
        ({"exploration_epsilon": -0.1}, "RECFORGE_EXPLORATION_EPSILON=-0.1: must be a finite number in [0, 1)"),
        ({"canary_min_requests": 50, "canary_window_requests": 20}, "must not exceed RECFORGE_CANARY_WINDOW_REQUESTS"),
        ({"canary_max_error_rate": 0}, "RECFORGE_CANARY_MAX_ERROR_RATE=0: must be a finite number in (0, 1]"),
    ],
)
def test_experiment_settings_are_range_checked(tmp_path, values, message):
    with pytest.raises(InvalidSettings, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_settings(ServingSettings, home=tmp_path, **values)


def test_the_canary_ramps_on_its_schedule_and_a_rollback_holds_it_at_zero():
    from serving.experiments import RunningExperiment

    day = datetime(2026, 12, 1, tzinfo=UTC)
    assignment = Assignment(NAME, "s1", (("control", 0.5), ("challenger", 0.5)), canary="challenger",
                            schedule=((day, 0.05), (day + timedelta(days=2), 0.5)))  # fmt: skip
    running = RunningExperiment(assignment, {}, day, day + timedelta(days=9))
    assert running.shares(day + timedelta(days=1)) == [("challenger", 0.05), ("control", 0.95)]
    assert running.shares(day + timedelta(days=3)) == [("challenger", 0.5), ("control", 0.5)]
    rolled = RunningExperiment(assignment, {}, day, day + timedelta(days=9), rolled_back={"variant": "challenger"})
    assert rolled.shares(day + timedelta(days=3)) == [("challenger", 0.0), ("control", 1.0)]


def test_a_schedule_without_a_time_zone_is_refused_not_crashed_on(home, live):
    from serving.experiments import ExperimentStateError, RunningExperiment

    entry = write_state(home, live.version)
    entry["assignment"] = {**entry["assignment"], "canary": "challenger", "schedule": [["2026-12-01T00:00:00", 0.1]]}
    with pytest.raises(ExperimentStateError, match="every moment must carry a time zone"):
        RunningExperiment.from_state(NAME, entry, STATE_FILE)


def test_session_answers_come_from_the_users_variant_and_never_reach_the_holdback(home, live):
    from tests.serving.test_session import KEY, send

    entry = write_state(home, live.version)
    assignment = Assignment.from_json(entry["assignment"])
    users = [str(u) for u in live.user_ids[:300]]
    by_arm = {arm: next(u for u in users if assignment.variant(u, datetime.now(UTC)) == arm)
              for arm in ("challenger", HOLDBACK)}  # fmt: skip
    clicked = live.item_ids[-1]
    with client_for(home, collector_app_key=KEY) as client:
        for user in by_arm.values():
            send(client, user, clicked)
        answers = {arm: client.get(f"/v1/users/{u}/recommendations").json() for arm, u in by_arm.items()}
    challenger = answers["challenger"]
    assert (challenger["variant"], challenger["version"]) == ("challenger", CHALLENGER)
    assert any(i["reason"] == f"session:{clicked}" for i in challenger["items"]), challenger
    held = answers[HOLDBACK]
    assert held["fallback"] and held["variant"] == HOLDBACK and {i["reason"] for i in held["items"]} == {"popular"}
    shown = landed(home).query("not shadow").set_index("request_id")
    assert shown.loc[challenger["request_id"], "variant"] == "challenger"
