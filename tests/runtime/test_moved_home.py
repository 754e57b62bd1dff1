"""A home that can move: `cp -r home /elsewhere && RECFORGE_HOME=/elsewhere recforge ...` works.

Everything under RECFORGE_HOME is addressed relative to it at run time. The original home is
deleted before the moved one is used, so a read of the old location fails and a write into it would
recreate it: both are caught here.
"""

import shutil
import sqlite3
import time

import pytest

from pipelines.cli import main
from pipelines.reports.index import stored_report
from pipelines.training.tracking import ARTIFACT_URI_COLUMNS, CHALLENGER, CHAMPION, configure, version_by_alias
from serving.format import current_version, read_manifest
from tests.conftest import copy_home, make_settings


def artifact_uris(settings) -> list[str]:
    con = sqlite3.connect(settings.mlflow_dir / "mlflow.db")
    try:
        return [
            uri
            for table, column in ARTIFACT_URI_COLUMNS
            for (uri,) in con.execute(f"select {column} from {table} where {column} is not null")  # noqa: S608
        ]
    finally:
        con.close()


def files_naming(root, text: str) -> list[str]:
    needle = text.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


@pytest.fixture
def moved(published, tmp_path, monkeypatch):
    """(old home path, settings of the moved home): a published home that drift-checked, copied, then deleted."""
    original = copy_home(published, tmp_path / "original" / "home")
    configure(original)  # the home is in use where it was created
    assert main_in(original, monkeypatch, ["drift"]) == 0
    target = tmp_path / "elsewhere" / "home"
    shutil.copytree(original.home, target)
    shutil.rmtree(tmp_path / "original")
    return original.home, make_settings(target)


def main_in(settings, monkeypatch, argv: list[str]) -> int:
    """`RECFORGE_HOME=<settings.home> recforge <argv>` with the fixtures' other settings."""
    for key, value in settings.to_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RECFORGE_HOME", str(settings.home))
    return main(argv)


def test_a_moved_home_trains_publishes_reports_and_serves_without_touching_the_old_one(moved, monkeypatch, capsys):
    old, settings = moved
    assert any(uri.startswith(old.as_uri()) for uri in artifact_uris(settings))  # as copied: MLflow's absolute URIs
    capsys.readouterr()

    for command in (["train"], ["publish"], ["drift"], ["reports"], ["status"]):
        assert main_in(settings, monkeypatch, command) == 0, command
    out = capsys.readouterr().out
    assert not old.parent.exists(), "something was written into the old home"

    # the results: an identical retrain ties and keeps the champion; the champion is published here
    client = configure(settings)
    name = settings.registered_model_name
    assert str(version_by_alias(client, name, CHAMPION).version) == "1"
    assert str(version_by_alias(client, name, CHALLENGER).version) == "2"
    live = current_version(settings.published_dir)
    assert read_manifest(settings.published_dir / live)["model"]["version"] == "1"
    assert f"published:   {settings.published_dir / live} (live via CURRENT)" in out
    assert "WARNING" not in out and str(old) not in out

    # every stored address now names the new home; the old one is named nowhere
    uris = artifact_uris(settings)
    assert uris and all(uri.startswith("models:/") or uri.startswith(settings.mlflow_dir.as_uri()) for uri in uris)
    assert files_naming(settings.home, str(old)) == []
    index = (settings.reports_dir / "index.html").read_text()
    assert "href='drift/" in index and str(settings.home) not in index

    from fastapi.testclient import TestClient

    from serving.config import ServingSettings
    from serving.main import create_app

    with TestClient(create_app(ServingSettings(home=settings.home, reload_interval_seconds=0.2))) as api:
        deadline = time.monotonic() + 15
        while api.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the moved home's publication never loaded"
            time.sleep(0.05)
        answer = api.get("/v1/users/u000002/recommendations", params={"k": 3}).json()
    assert answer["version"] == live and len(answer["items"]) == 3


def test_a_report_path_stored_absolute_by_an_older_release_is_found_in_the_moved_home(settings):
    legacy = "/srv/old-place/var/reports/drift/drift_20260101T000000Z.html"
    assert stored_report(settings, legacy) == settings.reports_dir / "drift" / "drift_20260101T000000Z.html"
    assert stored_report(settings, "drift/x.html") == settings.reports_dir / "drift" / "x.html"
    inside = settings.reports_dir / "drift" / "y.html"
    assert stored_report(settings, str(inside)) == inside


def test_an_external_tracking_store_is_never_rewritten(settings, tmp_path):
    from pipelines.training.tracking import rebase_local_store

    external = settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'other.db'}"})
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    (settings.mlflow_dir / "mlflow.db").write_bytes(b"")  # present, but not this store's to touch
    assert rebase_local_store(external) == 0
    assert rebase_local_store(settings) == 0  # an empty database has no experiments to rebase
