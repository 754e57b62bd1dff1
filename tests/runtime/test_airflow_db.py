"""The metadata DB of a home is brought to head with the warehouse pool once, then left alone.

One real migration (module fixture) makes the installation's template in a scratch directory;
the rest checks which way `prepare` goes (copy, nothing, migrate) and that every failure names
what failed. Airflow itself runs only in child processes: the test process never imports it.
"""

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from pipelines.contract import WAREHOUSE_POOL, WAREHOUSE_POOL_DESCRIPTION, WAREHOUSE_POOL_SLOTS
from pipelines.runtime import airflow_db
from pipelines.runtime.airflow_home import (
    AirflowSetupFailed,
    airflow_environment,
    configure_airflow,
    metadata_db,
)
from tests.conftest import make_settings


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, **airflow_environment(make_settings(home)), "PYTHONPATH": os.getcwd()}


def pool_and_revision(db: Path) -> tuple[tuple | None, str | None]:
    with sqlite3.connect(db) as connection:
        pool = connection.execute(
            "SELECT slots, description FROM slot_pool WHERE pool = ?", (WAREHOUSE_POOL,)
        ).fetchone()
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    return pool, revision


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("installation") / "airflow-metadata"


@pytest.fixture(scope="module")
def first_home(package_dir, tmp_path_factory) -> Path:
    """A home migrated for real, which leaves the installation's template behind."""
    home = tmp_path_factory.mktemp("first") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(airflow_db, "PACKAGE_DIR", package_dir)
        db = metadata_db(make_settings(home))
        db.parent.mkdir(parents=True, exist_ok=True)
        assert airflow_db.prepare(db, environment(home)) == "migrated"
    return home


@pytest.fixture
def installation(package_dir, first_home, monkeypatch) -> Path:
    monkeypatch.setattr(airflow_db, "PACKAGE_DIR", package_dir)
    return airflow_db.template_path()


def new_db(tmp_path: Path) -> Path:
    db = metadata_db(make_settings(tmp_path / "home"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return db


def no_migration(monkeypatch) -> list:
    """Records every migration `prepare` asks for instead of running it."""
    asked: list = []
    monkeypatch.setattr(airflow_db, "migrate", lambda env: asked.append(env))
    return asked


def test_first_migration_sets_the_pool_as_the_contract_says_and_keeps_a_template(first_home, installation):
    pool, revision = pool_and_revision(metadata_db(make_settings(first_home)))
    assert pool == (WAREHOUSE_POOL_SLOTS, WAREHOUSE_POOL_DESCRIPTION)
    assert installation.exists()
    assert pool_and_revision(installation) == (pool, revision)


def test_a_new_home_gets_a_copy_of_the_template_without_migrating(installation, tmp_path, monkeypatch):
    asked = no_migration(monkeypatch)
    db = new_db(tmp_path)
    assert airflow_db.prepare(db, environment(tmp_path / "home")) == "copied"
    assert asked == []
    assert pool_and_revision(db) == pool_and_revision(installation)


def test_a_home_at_head_with_its_pool_is_left_alone(installation, tmp_path, monkeypatch):
    db = new_db(tmp_path)
    airflow_db.prepare(db, environment(tmp_path / "home"))
    before = db.stat().st_mtime_ns
    asked = no_migration(monkeypatch)
    assert airflow_db.prepare(db, environment(tmp_path / "home")) == "ready"
    assert asked == [] and db.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE alembic_version SET version_num = 'an-older-revision'",
        f"UPDATE slot_pool SET slots = 4 WHERE pool = '{WAREHOUSE_POOL}'",
        f"UPDATE slot_pool SET description = 'edited by hand' WHERE pool = '{WAREHOUSE_POOL}'",
        f"DELETE FROM slot_pool WHERE pool = '{WAREHOUSE_POOL}'",
    ],
    ids=["older-revision", "pool-resized", "pool-description", "pool-missing"],
)
def test_a_home_that_differs_from_head_or_the_contract_is_migrated(installation, tmp_path, monkeypatch, change):
    db = new_db(tmp_path)
    airflow_db.prepare(db, environment(tmp_path / "home"))
    with sqlite3.connect(db) as connection:
        connection.execute(change)
    asked = no_migration(monkeypatch)
    assert airflow_db.prepare(db, environment(tmp_path / "home")) == "migrated"
    assert len(asked) == 1


def test_a_missing_pool_is_restored_by_the_real_migration(installation, tmp_path):
    db = new_db(tmp_path)
    airflow_db.prepare(db, environment(tmp_path / "home"))
    with sqlite3.connect(db) as connection:
        connection.execute(f"DELETE FROM slot_pool WHERE pool = '{WAREHOUSE_POOL}'")
    assert airflow_db.prepare(db, environment(tmp_path / "home")) == "migrated"
    assert pool_and_revision(db) == pool_and_revision(installation)


def test_a_new_airflow_installation_does_not_use_the_old_template(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "apache_airflow-3.3.2.dist-info").mkdir(parents=True)
    monkeypatch.setattr("sys.path", [str(site)])
    before = airflow_db.installation_key()
    (site / "apache_airflow-3.3.2.dist-info").rename(site / "apache_airflow-3.4.0.dist-info")
    assert airflow_db.installation_key() != before


def test_a_read_only_installation_migrates_every_new_home_and_keeps_no_template(tmp_path, monkeypatch):
    monkeypatch.setattr(airflow_db, "PACKAGE_DIR", tmp_path / "installation" / "airflow-metadata")
    asked = no_migration(monkeypatch)

    def read_only_mount(source, target):
        raise OSError(30, "Read-only file system", str(target))

    monkeypatch.setattr(airflow_db, "_copy_sqlite", read_only_mount)
    db = new_db(tmp_path)
    assert airflow_db.prepare(db, environment(tmp_path / "home")) == "migrated"
    assert len(asked) == 1
    assert not airflow_db.template_path().exists()


def test_a_failed_migration_names_the_database_and_the_exit_code(tmp_path):
    env = environment(tmp_path / "home")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'no-such-dir' / 'airflow.db'}"
    with pytest.raises(airflow_db.MetadataSetupFailed, match=r"no-such-dir/airflow\.db.*exit code [1-9]"):
        airflow_db.migrate(env)


def test_a_corrupt_metadata_db_is_reported_and_left_as_it_was(installation, tmp_path):
    db = new_db(tmp_path)
    db.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(airflow_db.MetadataSetupFailed, match="migrating the Airflow metadata DB"):
        airflow_db.prepare(db, environment(tmp_path / "home"))
    assert db.read_bytes().startswith(b"this is not a SQLite database")


def test_a_launcher_fails_with_the_metadata_error(tmp_path, monkeypatch):
    def failing(db, env):
        raise airflow_db.MetadataSetupFailed(f"migrating the Airflow metadata DB ({db}) failed")

    monkeypatch.setattr(airflow_db, "prepare", failing)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # configure_airflow exports into it
    monkeypatch.delitem(sys.modules, "airflow", raising=False)  # a DAG test of this worker may have imported it
    settings = make_settings(tmp_path / "home")
    with pytest.raises(AirflowSetupFailed, match=r"metadata DB .*airflow\.db\) failed"):
        configure_airflow(settings, "WARNING")
