"""The failure log: every failed API answer and every fallback gets one record with its reason.

Requests go through the real app (TestClient), and through a real `python -m serving` for what
only the HTTP protocol sees (oversized or malformed requests). The log is read after the app's
shutdown, which writes out everything queued.
"""

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from pipelines.publication.publish import current_version
from pipelines.runtime.processes import free_port
from serving.config import InvalidSettings, ServingSettings, load_settings
from serving.failures import DROPPED, FAILED_ANSWERS, FILE_NAME, FailureLog, Reason, log_files
from serving.main import create_app
from tests.serving.test_serving import wait_until


def records(directory) -> list[dict]:
    return [json.loads(line) for path in log_files(directory) for line in path.read_text().splitlines()]


@contextmanager
def app_on(home, log_dir, wait_ready=True, **values):
    settings = ServingSettings(home=home, reload_interval_seconds=0.2, failure_log_dir=log_dir, **values)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if wait_ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, "the live publication never loaded")
        yield client


@pytest.mark.parametrize(
    ("method", "path", "status", "reason", "ids"),
    [
        ("GET", "/v1/users/never-seen/recommendations?k=3", 200, Reason.UNKNOWN_USER, {"user_id": "never-seen"}),
        ("GET", "/v1/items/no-such-item/similar", 404, Reason.UNKNOWN_ITEM, {"item_id": "no-such-item"}),
        ("GET", "/v1/users/u000001/recommendations?k=0", 422, Reason.INVALID_K, {"user_id": "u000001"}),
        ("GET", "/v1/items/i000001/similar?k=ten", 422, Reason.INVALID_K, {"item_id": "i000001"}),
        ("GET", "/v1/users/bad id!/recommendations", 422, Reason.INVALID_USER_ID, {"user_id": "bad id!"}),
        ("GET", "/v1/items/bad id!/similar", 422, Reason.INVALID_ITEM_ID, {"item_id": "bad id!"}),
        ("GET", "/v1/users/u000001/recommendations?exclude=" + ",".join(f"i{n}" for n in range(201)), 422,
         Reason.INVALID_PARAMETER, {"user_id": "u000001"}),
        ("GET", "/v1/no/such/endpoint", 404, Reason.UNKNOWN_ENDPOINT, {"path": "/v1/no/such/endpoint"}),
        ("POST", "/v1/users/u000001/recommendations", 405, Reason.METHOD_NOT_ALLOWED, {}),
    ],
)  # fmt: skip
def test_each_failure_gets_one_record_with_its_reason(published, tmp_path, method, path, status, reason, ids):
    with app_on(published.home, tmp_path / "log") as client:
        assert client.request(method, path).status_code == status
    (record,) = records(tmp_path / "log")
    assert record["reason"] == reason and record["status"] == status
    assert record["version"] == current_version(published.published_dir)
    assert record["time"].endswith("Z")
    assert abs(datetime.now(UTC) - datetime.fromisoformat(record["time"])) < timedelta(minutes=2)
    assert {name: record[name] for name in ids} == ids
    if reason is not Reason.UNKNOWN_ENDPOINT:
        assert record["endpoint"].startswith("/v1/") and "{" in record["endpoint"]  # the route, not the path


def test_successful_answers_and_errors_outside_the_api_are_not_logged(published, tmp_path):
    with app_on(published.home, tmp_path / "log") as client:
        assert client.get("/v1/users/u000001/recommendations").status_code == 200
        assert client.get("/v1/items/i000001/similar").status_code == 200
        assert client.get("/no-such-page").status_code == 404
    assert records(tmp_path / "log") == []


def test_no_publication_is_logged_and_not_ready_is_not(settings, tmp_path):
    with app_on(settings.home, tmp_path / "log", wait_ready=False) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/v1/users/u1/recommendations").status_code == 503
    (record,) = records(tmp_path / "log")
    assert (record["reason"], record["status"], record["version"]) == (Reason.NO_PUBLICATION, 503, None)


def test_an_unexpected_exception_is_logged_as_an_internal_error(published, tmp_path, monkeypatch):
    with app_on(published.home, tmp_path / "log") as client:
        live = client.app.state.store.current

        def broken(*args):
            raise RuntimeError("lists corrupted in memory")

        monkeypatch.setattr(live, "user_body", broken)  # the router builds its answer with user_body
        response = client.get("/v1/users/never-seen/recommendations?exclude=i1")
        assert (response.status_code, response.json()) == (500, {"detail": "internal error"})
    reasons = [(r["reason"], r["status"], r.get("detail")) for r in records(tmp_path / "log")]
    assert reasons == [
        (Reason.UNKNOWN_USER, 200, None),  # the fallback was decided before the answer failed
        (Reason.INTERNAL_ERROR, 500, "RuntimeError: lists corrupted in memory"),
    ]


def test_without_ids_a_record_holds_no_id_path_or_message(published, tmp_path):
    with app_on(published.home, tmp_path / "log", failure_log_ids=False) as client:
        client.get("/v1/users/secret-user-7/recommendations")
        client.get("/v1/items/secret-item-9/similar")
        client.get("/v1/secret-path-3")
    text = "".join(path.read_text() for path in log_files(tmp_path / "log"))
    assert "secret" not in text
    logged = records(tmp_path / "log")
    assert [r["reason"] for r in logged] == [Reason.UNKNOWN_USER, Reason.UNKNOWN_ITEM, Reason.UNKNOWN_ENDPOINT]
    assert {tuple(r) for r in logged} == {("time", "endpoint", "status", "reason", "version")}


def test_failures_are_counted_by_reason_in_metrics(published, tmp_path):
    with app_on(published.home, tmp_path / "log") as client:
        client.get("/v1/users/never-seen/recommendations")
        client.get("/v1/users/never-seen-2/recommendations")
        client.get("/v1/items/no-such-item/similar")
        exposition = client.get("/metrics").text
    assert f'{FAILED_ANSWERS}{{reason="unknown_user"}} 2.0' in exposition
    assert f'{FAILED_ANSWERS}{{reason="unknown_item"}} 1.0' in exposition
    assert f'{FAILED_ANSWERS}{{reason="internal_error"}} 0.0' in exposition  # every reason from the start
    assert f'{DROPPED}{{cause="queue_full"}} 0.0' in exposition


def failure_log(directory, **overrides) -> tuple[FailureLog, CollectorRegistry]:
    registry = CollectorRegistry()
    values = {"max_files": 3, "max_file_bytes": 4096, "queue_size": 10_000, "write_ids": True, **overrides}
    return FailureLog(directory, registry=registry, **values), registry


def test_rotation_keeps_at_most_files_times_bytes_and_the_newest_records(tmp_path):
    log, _ = failure_log(tmp_path)
    log.start()
    for n in range(300):
        log.record("/v1/users/{user_id}/recommendations", 200, Reason.UNKNOWN_USER, "v1", user_id=f"u{n:06d}")
    log.stop()
    files = log_files(tmp_path)
    assert [p.name for p in files] == [f"{FILE_NAME}.2", f"{FILE_NAME}.1", FILE_NAME]
    assert all(0 < p.stat().st_size <= 4096 for p in files)
    users = [r["user_id"] for r in records(tmp_path)]
    assert users[-1] == "u000299" and users == [f"u{n:06d}" for n in range(300 - len(users), 300)]  # no gap
    assert len(users) < 300  # the oldest were rotated out


def test_a_single_file_is_replaced_when_full(tmp_path):
    log, _ = failure_log(tmp_path, max_files=1)
    log.start()
    for n in range(200):
        log.record("/v1/items/{item_id}/similar", 404, Reason.UNKNOWN_ITEM, "v1", item_id=f"i{n}")
    log.stop()
    assert [p.name for p in log_files(tmp_path)] == [FILE_NAME]
    assert (tmp_path / FILE_NAME).stat().st_size <= 4096 and records(tmp_path)[-1]["item_id"] == "i199"


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    log, registry = failure_log(tmp_path, queue_size=5)  # the writer not started: nothing drains the queue
    started = time.perf_counter()
    for n in range(50):
        log.record("/v1/users/{user_id}/recommendations", 422, Reason.INVALID_K, "v1", user_id=f"u{n}")
    assert time.perf_counter() - started < 0.5  # 50 records, none waited
    assert registry.get_sample_value(DROPPED + "", {"cause": "queue_full"}) == 45
    assert registry.get_sample_value(FAILED_ANSWERS, {"reason": "invalid_k"}) == 50  # counted, dropped or not
    log.start()
    log.stop()
    assert [r["user_id"] for r in records(tmp_path)] == ["u0", "u1", "u2", "u3", "u4"]


def test_a_log_that_cannot_be_written_drops_and_counts_and_never_raises(tmp_path):
    (tmp_path / "taken").write_text("a file where the directory should be")
    log, registry = failure_log(tmp_path / "taken")
    log.start()
    log.record("/v1/items/{item_id}/similar", 404, Reason.UNKNOWN_ITEM, "v1", item_id="i1")
    log.stop()
    assert registry.get_sample_value(DROPPED, {"cause": "write_error"}) == 1


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("failure_log_files", 0, "RECFORGE_FAILURE_LOG_FILES=0: must be an integer in [1, 100]"),
        (
            "failure_log_file_bytes",
            100,
            "RECFORGE_FAILURE_LOG_FILE_BYTES=100: must be an integer in [4096, 1073741824]",
        ),
        ("failure_log_queue", 0, "RECFORGE_FAILURE_LOG_QUEUE=0: must be an integer in [1, 1000000]"),
        ("failure_log_ids", "perhaps", "RECFORGE_FAILURE_LOG_IDS='perhaps': must be true or false"),
    ],
)
def test_an_invalid_failure_log_setting_is_one_line_naming_it(variable, value, line):
    with pytest.raises(InvalidSettings) as raised:
        load_settings(ServingSettings, **{variable: value})
    assert str(raised.value) == f"invalid setting: {line}"


def test_the_server_refuses_an_invalid_failure_log_setting_with_one_line(tmp_path):
    env = {**os.environ, "RECFORGE_HOME": str(tmp_path), "RECFORGE_FAILURE_LOG_FILES": "1000"}
    result = subprocess.run([sys.executable, "-m", "serving"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "serve: error: invalid setting: RECFORGE_FAILURE_LOG_FILES='1000': must be an integer in [1, 100]"
    ]


def test_requests_refused_by_the_http_protocol_are_logged(tmp_path):
    """Oversized heads and bodies and unparsable requests never reach the app: the protocol records them."""
    port = free_port()
    log_dir = tmp_path / "log"
    env = {**os.environ, "RECFORGE_HOME": str(tmp_path / "home"), "RECFORGE_PORT": str(port),
           "RECFORGE_FAILURE_LOG_DIR": str(log_dir), "RECFORGE_FAILURE_LOG_IDS": "true"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "serving"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: _answers(port), "python -m serving did not start", timeout=30)
        requests = [
            b"GET /v1/users/u1/recommendations HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000,  # a head never ending
            b"GET /v1/users/u1/recommendations HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n",
            b"POST /v1/users/u1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ]
        for data in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(data)
                connection.recv(4096)
        wait_until(lambda: len(records(log_dir)) == 4, "the refusals were not all logged", timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=10)
    logged = records(log_dir)
    assert [(r["reason"], r["status"]) for r in logged] == [
        (Reason.HEADER_TOO_LARGE, 431),
        (Reason.TOO_MANY_HEADERS, 431),
        (Reason.BODY_TOO_LARGE, 413),
        (Reason.MALFORMED_REQUEST, 400),
    ]
    assert [r.get("path") for r in logged] == ["/v1/users/u1/recommendations"] * 3 + [None]
    assert {r["endpoint"] for r in logged} == {"unmatched"}


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_collectors_failures_are_logged_with_their_reasons(tmp_path):
    key = "k" * 32
    auth = {"Authorization": f"Bearer {key}"}
    with app_on(tmp_path / "off", tmp_path / "log-off", wait_ready=False) as client:
        assert client.post("/v1/events", json={}).status_code == 503
    settings = {"collector_app_key": key}
    with app_on(tmp_path / "on", tmp_path / "log-on", wait_ready=False, **settings) as client:
        assert client.post("/v1/events", json={}).status_code == 401
        plain = {**auth, "content-type": "text/plain"}
        assert client.post("/v1/events", content=b"x", headers=plain).status_code == 415
        assert client.post("/v1/events", json=[{"user_id": "u1"}], headers=auth).status_code == 422
    assert [(r["reason"], r["status"]) for r in records(tmp_path / "log-off")] == [(Reason.COLLECTOR_OFF, 503)]
    assert [(r["reason"], r["status"], r["endpoint"]) for r in records(tmp_path / "log-on")] == [
        (Reason.UNAUTHORIZED, 401, "/v1/events"),
        (Reason.INVALID_EVENTS, 415, "/v1/events"),
        (Reason.INVALID_EVENTS, 422, "/v1/events"),
    ]


def test_a_forgotten_users_requests_are_logged_without_the_id(published, tmp_path):
    from serving.denylist import DENYLIST, add_to_denylist
    from tests.conftest import copy_home

    settings = copy_home(published, tmp_path / "home")
    user = "u000001"
    add_to_denylist(settings.published_dir / DENYLIST, [user], current_version(settings.published_dir))
    with app_on(settings.home, tmp_path / "log") as client:
        wait_until(lambda: client.app.state.store.denies(user), "the deny list was never read")
        assert client.get(f"/v1/users/{user}/recommendations").json()["fallback"] is True
        assert client.get(f"/v1/users/{user}/recommendations?k=0").status_code == 422
    logged = records(tmp_path / "log")
    assert [(r["reason"], r.get("user_id")) for r in logged] == [
        (Reason.FORGOTTEN_USER, None),
        (Reason.INVALID_K, None),
    ]
    assert user not in "".join(path.read_text() for path in log_files(tmp_path / "log"))
