"""Forgetting users: after `forget_users`, no file under RECFORGE_HOME names them and the API answers
them with the fallback; per store, the rows go and everyone else stays; the failure paths.

The home is the `published` fixture's (simulate, ingest, dbt, train, publish: the stages of
`make run`) plus the raw checkpoint, dbt docs, the marts checkpoint and a drift check, so every
store a run writes is there. Simulated user ids are `u` and six digits: a chosen id cannot occur
inside another id (all have the same length) and the search is for whole tokens besides.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from pipelines.privacy.forget import ForgetError, audit_records, forget_users
from pipelines.privacy.keys import keyed_hash, privacy_key
from pipelines.privacy.scan import find_ids
from pipelines.warehouse.connection import connect
from serving.config import ServingSettings
from serving.denylist import DENYLIST, add_to_denylist
from serving.format import USER_RECS, complete_versions, current_version
from serving.main import create_app
from tests.conftest import copy_home, whole_log


@pytest.fixture(scope="module")
def full_home(published, tmp_path_factory):
    """The published home plus every report and check `make run` writes. Read-only: copy_home() it."""
    from pipelines.monitoring.drift import check_drift
    from pipelines.validation.checkpoints import validate_marts, validate_raw_batch
    from pipelines.warehouse.transform import generate_docs

    settings = copy_home(published, tmp_path_factory.mktemp("forget-full") / "home")
    validate_raw_batch(settings, *whole_log(settings))
    generate_docs(settings)
    validate_marts(settings)
    check_drift(settings)
    return settings


def published_user(settings, position: int = 7) -> str:
    root = settings.published_dir
    users = pq.read_table(root / current_version(root) / USER_RECS, columns=["user_id"]).column("user_id")
    return sorted(set(users.to_pylist()))[position]


def user_rows(settings, user: str) -> dict[str, int]:
    with connect(settings) as con:
        return {
            table: con.execute(f"select count(*) from {table} where user_id = ?", [user]).fetchone()[0]
            for table in ("raw.events", "intermediate.int_events_deduped", "marts.interactions", "marts.user_features")
        }


@pytest.fixture(scope="module")
def forgotten(full_home, tmp_path_factory):
    """(settings, user, result, rows before): one user forgotten in a copy of the full home."""
    settings = copy_home(full_home, tmp_path_factory.mktemp("forgotten") / "home")
    user = published_user(settings)
    before = user_rows(settings, user)
    assert before["raw.events"] > 0 and before["marts.interactions"] > 0
    assert find_ids(settings.home, [user])  # the search finds them before: it can fail
    result = forget_users(settings, [user])
    return settings, user, result, before


def test_no_file_under_the_home_names_the_user_raw_or_decoded(forgotten):
    settings, user, result, _ = forgotten
    grep = subprocess.run(
        ["grep", "-r", "-l", "-w", "--binary-files=text", user, str(settings.home)], capture_output=True, text=True
    )
    assert grep.returncode == 1 and grep.stdout == "", grep.stdout  # 1: no line matched
    assert find_ids(settings.home, [user]) == []  # Parquet, gzip, zip (.npz) and DuckDB decoded too
    assert result.verified is True and result.remaining == []


def test_every_store_lost_the_users_rows_and_only_theirs(forgotten, full_home):
    settings, user, result, before = forgotten
    assert user_rows(settings, user) == dict.fromkeys(before, 0)
    removed = {o.store: o.rows_removed for o in result.stores}
    assert removed["raw_events"] == before["raw.events"] and removed["landing_files"] >= before["raw.events"]
    assert removed["dbt_models"] >= before["marts.interactions"] + before["intermediate.int_events_deduped"]
    assert removed["model_artifacts"] >= 1 and removed["publications"] > 0 and removed["serving_deny_list"] == 1
    with connect(settings) as con, connect(full_home) as old:
        for table in ("raw.events", "marts.interactions"):
            now = con.execute(f"select count(*) from {table}").fetchone()[0]
            then = old.execute(f"select count(*) from {table}").fetchone()[0]
            assert now == then - before[table]
        bad = con.execute(
            "select count(*) from raw.batches where rows_input <> rows_accepted + rows_quarantined"
        ).fetchone()[0]
    assert bad == 0  # the batches' counts still add up


def test_a_new_publication_without_the_user_is_live_and_older_versions_are_rewritten(forgotten):
    settings, user, result, _ = forgotten
    root = settings.published_dir
    assert current_version(root) == result.publication_version
    manifest = json.loads((root / result.publication_version / "manifest.json").read_text())
    assert manifest["forget_requests"][0]["request_id"] == result.request_id and manifest["derived_from"]
    for version in complete_versions(root):
        assert user not in set(pq.read_table(root / version / USER_RECS).column("user_id").to_pylist())


def test_the_rewritten_champion_still_loads_and_the_next_publication_holds_no_forgotten_user(forgotten, tmp_path):
    import mlflow.pyfunc

    from pipelines.publication.publish import load_champion, publish
    from pipelines.training.tracking import configure

    settings, user, result, _ = forgotten
    settings = copy_home(settings, tmp_path / "home")
    model, facts = load_champion(settings)
    assert user not in set(model.user_ids.astype(str)) and facts["version"] in result.model_versions
    client = configure(settings)
    version = client.get_model_version(settings.registered_model_name, facts["version"])
    assert version.tags[f"forget.{result.request_id}"] == "user rows removed in place"
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}/{facts['version']}")
    answer = pyfunc.predict(pd.DataFrame({"user_id": [user, published_user(settings, 20)]}), params={"k": 3})
    assert set(answer["user_id"]) == {published_user(settings, 20)}  # the forgotten user is unknown to it
    republished = publish(settings)
    assert user not in set(pq.read_table(republished.path / USER_RECS).column("user_id").to_pylist())
    assert find_ids(settings.home, [user]) == []


def test_the_kept_fold_fit_loses_the_users_row_and_still_starts_the_next_training(forgotten, full_home):
    from models import Recommender
    from pipelines.training.fold_fits import MODEL, RECORD

    settings, user, _, _ = forgotten
    kept, before = (home.models_dir / "fold_fits" / "als" for home in (settings, full_home))
    assert user in set(Recommender.load(before / MODEL).user_ids.astype(str))  # it held the user: the test can fail
    model = Recommender.load(kept / MODEL)
    assert user not in set(model.user_ids.astype(str))
    assert len(model.user_ids) == len(Recommender.load(before / MODEL).user_ids) - 1
    assert model.user_factors.shape[0] == len(model.user_ids)
    assert (kept / RECORD).read_text() == (before / RECORD).read_text()  # the record (no ids) stays with it


def test_the_api_answers_the_forgotten_user_with_the_fallback(forgotten):
    settings, user, _, _ = forgotten
    with TestClient(create_app(ServingSettings(home=settings.home))) as client:
        for _ in range(100):
            answer = client.get(f"/v1/users/{user}/recommendations?k=5")
            if answer.status_code == 200:
                break
        body = answer.json()
        other = client.get(f"/v1/users/{published_user(settings, 20)}/recommendations?k=5").json()
    assert body["fallback"] is True and body["version"] == current_version(settings.published_dir)
    assert other["fallback"] is False


def test_the_deny_list_answers_the_fallback_before_the_new_publication_is_live(published, tmp_path):
    """Serving, still on the old publication, stops answering the user's own list from the deny list alone."""
    settings = copy_home(published, tmp_path / "home")
    user = published_user(settings)
    with TestClient(create_app(ServingSettings(home=settings.home))) as client:
        store = client.app.state.store
        store.refresh()
        assert client.get(f"/v1/users/{user}/recommendations").json()["fallback"] is False
        add_to_denylist(settings.published_dir / DENYLIST, [user], current_version(settings.published_dir))
        store.refresh_denylist()
        assert client.get(f"/v1/users/{user}/recommendations").json()["fallback"] is True
        assert client.get(f"/v1/users/{published_user(settings, 20)}/recommendations").json()["fallback"] is False
    assert user not in (settings.published_dir / DENYLIST).read_text()


def test_the_audit_keeps_keyed_hashes_counts_and_versions_never_the_id(forgotten):
    settings, user, result, _ = forgotten
    [record] = [r for r in audit_records(settings) if r["request_id"] == result.request_id]
    assert json.loads(record["user_hashes"]) == [keyed_hash(privacy_key(settings), user)]
    assert record["publication_version"] == result.publication_version and record["verified"]
    stores = {s["store"]: s for s in json.loads(record["stores"])}
    assert "item_index.faiss holds item vectors only" in stores["model_artifacts"]["note"]
    report = json.loads(result.report.read_text())
    assert report["request_id"] == result.request_id and user not in result.report.read_text()
    assert (settings.reports_dir / "privacy" / "index.html").exists()
    assert settings.privacy_key_path.stat().st_mode & 0o777 == 0o600


def test_an_unknown_user_leaves_an_audit_record_with_zero_rows(published, tmp_path):
    settings = copy_home(published, tmp_path / "home", forget_verify=False)
    live = current_version(settings.published_dir)
    result = forget_users(settings, ["u999999"])
    assert all(o.rows_removed == 0 for o in result.stores if o.store != "serving_deny_list")
    assert current_version(settings.published_dir) == live  # nothing held them: no new version
    assert [r["request_id"] for r in audit_records(settings)] == [result.request_id]


@pytest.mark.parametrize(("bad", "reason"), [("", "missing"), ("u 1", "id_bad_characters"), ("u" * 129, "too_long")])
def test_an_id_outside_the_id_contract_stops_the_request_before_anything_changes(settings, bad, reason):
    with pytest.raises(ForgetError, match=reason):
        forget_users(settings, ["u000001", bad])
    assert not (settings.published_dir / DENYLIST).exists()


def test_a_request_that_crashed_half_way_completes_when_run_again(full_home, tmp_path, monkeypatch):
    import pipelines.privacy.forget as forget

    settings = copy_home(full_home, tmp_path / "home")
    user = published_user(settings, 30)

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-request")

    monkeypatch.setitem(forget.STEP_GROUPS, "models", crash)
    with pytest.raises(RuntimeError, match="killed"):
        forget_users(settings, [user], request_id="req-crash")
    assert find_ids(settings.home, [user])  # the model bundles still hold the user
    monkeypatch.undo()
    result = forget_users(settings, [user], request_id="req-crash")
    assert result.verified is True and find_ids(settings.home, [user]) == []
    assert {o.store: o.rows_removed for o in result.stores}["raw_events"] > 0  # the first run's counts kept


def test_the_cli_reads_ids_from_a_file_and_refuses_a_bad_one(published, tmp_path):
    from tests.conftest import run_recforge

    settings = copy_home(published, tmp_path / "home")
    ids = tmp_path / "ids.txt"
    ids.write_text("# users to forget\nu 1\n")
    bad = run_recforge(settings.home, "forget", "--file", str(ids))
    assert bad.returncode == 1 and "id_bad_characters" in bad.stderr and "nothing was forgotten" in bad.stderr
    user = published_user(settings, 40)
    ids.write_text(f"{user}\n")
    done = run_recforge(settings.home, "forget", "--file", str(ids))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified: no file names them" in done.stdout and user not in done.stdout + done.stderr
    assert pd.Series(find_ids(settings.home, [user])).empty
