"""Shared fixtures: a tiny simulated world, built once per session through the real stages."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.settings import Settings

pytest_plugins = ["tests.services"]  # postgres_database, redis_db

# Small enough that the whole pipeline runs in seconds, big enough that ALS has something to learn.
TINY = {
    "sim_users": 400,
    "sim_items": 160,
    "sim_categories": 6,
    "sim_days": 12,
    "sim_bot_users": 2,
    "test_days": 3,
    "valid_days": 3,
    "publish_top_n": 50,
    "als_factors": 16,
    "als_iterations": 12,
    # Two cheap candidates keep the shared fixtures fast; tests/training/test_candidates.py trains the default set.
    "train_candidates": ["popularity", "als"],
    "tune_enabled": False,  # tuning has its own tests (tests/training/test_tuning.py); the rest train on defaults
}


# Files holding a test with one of these marks (whole Airflow, Celery or PostgreSQL runs) start first.
SLOW_MARKS = ("e2e", "scaled")


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first, the rest after, each group in its collected order.

    `--dist loadfile` keeps a file on one worker, and xdist's own order (most tests first) started the
    30-day backfill's two-test file last, leaving the other worker idle for minutes at the end; with
    the slow files first (and `--no-loadscope-reorder`), hundreds of short files fill the end instead.
    """
    slow = {item.path for item in items if any(item.get_closest_marker(mark) for mark in SLOW_MARKS)}
    items.sort(key=lambda item: item.path not in slow)  # sort is stable: the order within a group is kept


def tiny_environment(values: dict | None = None) -> dict[str, str]:
    """TINY (or ``values``) as RECFORGE_* environment variables; lists and dicts as the JSON settings read."""
    return {
        f"RECFORGE_{key.upper()}": json.dumps(value) if isinstance(value, list | dict) else str(value)
        for key, value in (TINY if values is None else values).items()
    }


def run_recforge(
    home: Path, *args: str, values: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """The `recforge` command on `home` in a fresh process, with TINY's (or `values`') settings, never serving."""
    import os
    import sys

    env = {**os.environ, "RECFORGE_HOME": str(home), "RECFORGE_SERVE": "0", **tiny_environment(values)}
    recforge = Path(sys.executable).with_name("recforge")
    return subprocess.run([str(recforge), *args], env=env, capture_output=True, text=True, timeout=timeout)


def make_settings(home: Path, **overrides) -> Settings:
    settings = Settings(home=home, **{**TINY, **overrides})
    settings.ensure_dirs()
    return settings


def whole_log(settings: Settings) -> tuple[datetime, datetime]:
    start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=settings.sim_days)


def copy_home(source: Settings, target: Path, **overrides) -> Settings:
    """A private copy of a prepared home, for tests that change it."""
    shutil.copytree(source.home, target)
    return make_settings(target, **overrides)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def simulated(tmp_path_factory) -> Settings:
    from pipelines.simulate import simulate

    settings = make_settings(tmp_path_factory.mktemp("simulated") / "home")
    simulate(settings)
    return settings


@pytest.fixture(scope="session")
def built(simulated, tmp_path_factory) -> Settings:
    """Simulated, ingested and transformed by dbt. Read-only for tests: copy_home() to change it."""
    from pipelines.ingest import ingest_interval
    from pipelines.warehouse.transform import build_warehouse

    settings = copy_home(simulated, tmp_path_factory.mktemp("built") / "home")
    ingest_interval(settings, *whole_log(settings))
    build_warehouse(settings)
    return settings


@pytest.fixture(scope="session")
def trained(built, tmp_path_factory):
    """(settings, TrainResult) after one training. Read-only for tests: copy_home() to change it."""
    from pipelines.training.train import train_and_register

    settings = copy_home(built, tmp_path_factory.mktemp("trained") / "home")
    return settings, train_and_register(settings)


@pytest.fixture(scope="session")
def retrained(built, tmp_path_factory):
    """(settings, [TrainResult] x 3): popularity alone (v1, first champion), then popularity + ALS (v2, better:
    promoted), then popularity alone again (v3, worse than the champion's ALS: challenger). Read-only."""
    from pipelines.training.train import train_and_register

    settings = copy_home(built, tmp_path_factory.mktemp("retrained") / "home")
    results = []
    for candidates in (["popularity"], ["popularity", "als"], ["popularity"]):
        results.append(train_and_register(settings.model_copy(update={"train_candidates": candidates})))
    return settings, results


@pytest.fixture(scope="session")
def published(trained, tmp_path_factory) -> Settings:
    """Trained, registered and published. Read-only for tests: copy_home() to change it."""
    from pipelines.publication.publish import publish

    settings = copy_home(trained[0], tmp_path_factory.mktemp("published") / "home")
    publish(settings)
    return settings


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def debian_tool(command: str, package: str) -> str:
    """Path of `command`, installing Debian's `package` on first use if absent (the machine user is root).

    Fails under CI=true when it cannot be had, else skips. Installs are serialised with a file lock,
    because parallel test workers may need tools at the same time and apt allows one at a time.
    """
    import fcntl
    import os
    import subprocess

    path = shutil.which(command)
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        with open("/tmp/recforge-tests-apt.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if shutil.which(command) is None:
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
                subprocess.run(["apt-get", "install", "-y", "-qq", package], capture_output=True, check=False)
        path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed and could not be installed with apt-get install {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


# A browser with no way out: every proxied request and every name lookup fails.
NO_NETWORK = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def screenshot(chromium: str, url: str, target: Path, window: str = "1300,1000") -> subprocess.CompletedProcess:
    """Headless Chromium's screenshot of `url` into `target`, with the network off (a profile beside it)."""
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *NO_NETWORK, f"--user-data-dir={target.parent / 'chromium'}",
         f"--window-size={window}", f"--screenshot={target}", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, for looking at the HTML reports as a reader would."""
    return debian_tool("chromium", "chromium")
