"""Shared fixtures: a tiny simulated world, built once per session through the real stages."""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
from collections.abc import Callable
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


# --- CPU per test. On two cores the suite is CPU-bound: wall-clock durations (--durations) mostly say
# who waited, the CPU seconds of a test's phases (its worker's and the worker's finished children's:
# Airflow, dbt, `recforge` commands) say whom to make cheaper for `make test`'s 12 minutes. Each worker
# measures its tests; the reports carry the figures to the controller, which prints the costliest.
CPU_REPORT_TOP = 15
_PHASE_STARTED = pytest.StashKey[float]()
_CPU_BY_TEST: dict[str, float] = {}  # node id -> CPU seconds of setup + call + teardown (on the controller)


def cpu_seconds() -> float:
    """User + system CPU of this process and of its child processes that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_PHASE_STARTED] = cpu_seconds()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A phase's report: its CPU since the phase began; the next phase (call, teardown) begins here."""
    report = yield
    now = cpu_seconds()
    report.user_properties.append(("cpu_seconds", round(now - item.stash[_PHASE_STARTED], 3)))
    item.stash[_PHASE_STARTED] = now
    return report


def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == "cpu_seconds":
            _CPU_BY_TEST[report.nodeid] = _CPU_BY_TEST.get(report.nodeid, 0.0) + value


def pytest_terminal_summary(terminalreporter):
    if not _CPU_BY_TEST:
        return
    terminalreporter.write_sep("=", f"most CPU of {len(_CPU_BY_TEST)} tests (setup + call + teardown)")
    for nodeid, seconds in sorted(_CPU_BY_TEST.items(), key=lambda pair: -pair[1])[:CPU_REPORT_TOP]:
        terminalreporter.write_line(f"{seconds:8.1f}s cpu  {nodeid}")
    terminalreporter.write_line(f"{sum(_CPU_BY_TEST.values()):8.1f}s cpu  in all")


def benchmark_script(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not a package), for its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def assert_nothing_went_live(settings: Settings, before: str | None) -> None:
    """A failed publication left the live version at `before` and no staging directory behind."""
    from serving.format import STAGING_PREFIX, current_version

    assert current_version(settings.published_dir) == before
    assert not [p for p in settings.published_dir.iterdir() if p.name.startswith(STAGING_PREFIX)]


def copy_home(source: Settings, target: Path, **overrides) -> Settings:
    """A private copy of a prepared home, for tests that change it."""
    shutil.copytree(source.home, target)
    return make_settings(target, **overrides)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "home")


def shared_home(tmp_path_factory, name: str, prepare: Callable[[Path], object]) -> tuple[Path, object]:
    """A home prepared once per test session, by whichever xdist worker asks first, copied for each caller.

    Without this every worker simulated, ingested, built, trained and published the same tiny world
    (about 30 s of CPU each, four times over). ``prepare(home)`` builds into the shared directory under
    a file lock (the others wait for it) and returns a picklable value, kept beside the home. Each caller
    gets a private copy, so no DuckDB file is ever open in two workers; a copied home's MLflow store
    re-points its artifact URIs at the copy (pipelines/training/tracking.py), so the copies are whole.
    A worker that died while preparing leaves no ``value.pickle``: the next one starts that home again.
    """
    import fcntl
    import os
    import pickle

    basetemp = tmp_path_factory.getbasetemp()
    root = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp  # the run's, shared by workers
    shared = root / "shared-homes" / name
    shared.parent.mkdir(exist_ok=True)
    with open(shared.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "value.pickle").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            value = prepare(shared / "home")
            (shared / "value.pickle").write_bytes(pickle.dumps(value))
    home = tmp_path_factory.mktemp(name) / "home"
    shutil.copytree(shared / "home", home)
    return home, relocated(pickle.loads((shared / "value.pickle").read_bytes()), shared / "home", home)


def relocated(value, old_home: Path, new_home: Path):
    """`value` with a TrainResult's report path (or each of a list's) moved from `old_home` to `new_home`."""
    if isinstance(value, list):
        return [relocated(item, old_home, new_home) for item in value]
    if getattr(value, "report", None) is not None and value.report.is_relative_to(old_home):
        return dataclasses.replace(value, report=new_home / value.report.relative_to(old_home))
    return value


@pytest.fixture(scope="session")
def simulated(tmp_path_factory) -> Settings:
    from pipelines.simulate import simulate

    def prepare(home: Path) -> None:
        simulate(make_settings(home))

    return make_settings(shared_home(tmp_path_factory, "simulated", prepare)[0])


@pytest.fixture(scope="session")
def built(simulated, tmp_path_factory) -> Settings:
    """Simulated, ingested and transformed by dbt. Read-only for tests: copy_home() to change it."""
    from pipelines.ingest import ingest_interval
    from pipelines.warehouse.transform import build_warehouse

    def prepare(home: Path) -> None:
        settings = copy_home(simulated, home)
        ingest_interval(settings, *whole_log(settings))
        build_warehouse(settings)

    return make_settings(shared_home(tmp_path_factory, "built", prepare)[0])


@pytest.fixture(scope="session")
def trained(built, tmp_path_factory):
    """(settings, TrainResult) after one training. Read-only for tests: copy_home() to change it."""
    from pipelines.training.train import train_and_register

    home, result = shared_home(tmp_path_factory, "trained", lambda home: train_and_register(copy_home(built, home)))
    return make_settings(home), result


@pytest.fixture(scope="session")
def retrained(built, tmp_path_factory):
    """(settings, [TrainResult] x 3): popularity alone (v1, first champion), then popularity + ALS (v2, better:
    promoted), then popularity alone again (v3, worse than the champion's ALS: challenger). Read-only."""
    from pipelines.training.train import train_and_register

    def prepare(home: Path) -> list:
        settings = copy_home(built, home)
        return [
            train_and_register(settings.model_copy(update={"train_candidates": candidates}))
            for candidates in (["popularity"], ["popularity", "als"], ["popularity"])
        ]

    home, results = shared_home(tmp_path_factory, "retrained", prepare)
    return make_settings(home), results


@pytest.fixture(scope="session")
def published(trained, tmp_path_factory) -> Settings:
    """Trained, registered and published. Read-only for tests: copy_home() to change it."""
    from pipelines.publication.publish import publish

    def prepare(home: Path) -> None:
        publish(copy_home(trained[0], home))

    return make_settings(shared_home(tmp_path_factory, "published", prepare)[0])


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
