"""BLAS thread pools are set once where training starts: no warning from implicit, the setting obeyed.

Both run in a fresh process: implicit warns once per process and threadpoolctl changes the whole
process, so neither can be judged inside the test process.
"""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY, copy_home, run_recforge

REPO = Path(__file__).resolve().parents[2]


def test_recforge_train_prints_no_blas_thread_pool_warning(built, tmp_path, monkeypatch):
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)  # recforge must need no environment set for it
    home = copy_home(built, tmp_path / "home").home
    done = run_recforge(home, "train", values={**TINY, "train_candidates": ["als"]})
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "is configured to use" not in output and "threadpool_limits(1" not in output, output[-2000:]
    assert "BLAS thread pools:" in output  # the pools were set, and said so


SET_POOLS = """
import logging
from pipelines.settings import Settings
from pipelines.training.threads import set_thread_pools
from threadpoolctl import threadpool_info
pools = set_thread_pools(Settings(train_blas_threads=1))
assert pools, "no BLAS loaded"
assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}, threadpool_info()
print("set")
"""


def test_train_blas_threads_sets_every_loaded_blas():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SET_POOLS], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "set" in done.stdout
