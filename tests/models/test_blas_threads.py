"""BLAS thread pools are set deliberately around implicit's fitting.

Run in a fresh interpreter: implicit warns only once per process and only about the BLAS
libraries loaded at that moment, so a test process that already imported scipy or implicit
could pass without the fix.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FIT_IN_A_FRESH_PROCESS = """
import warnings
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info, threadpool_limits

from models import {model}
from models.dataset import Interactions

threadpool_limits(2, "blas")  # as on a 2-core machine: OpenBLAS would start 2 threads of its own
rng = np.random.default_rng(0)
frame = pd.DataFrame({{
    "user_id": [f"u{{i}}" for i in rng.integers(0, 50, 400)],
    "item_id": [f"i{{i}}" for i in rng.integers(0, 30, 400)],
    "weight": 1.0,
}})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {model}(factors=4, iterations=2).fit(Interactions.from_frame(frame))
blas = [w for w in caught if issubclass(w.category, RuntimeWarning) and "BLAS" in str(w.message)]
assert not blas, [str(w.message) for w in blas]
# the limit is lifted afterwards: the rest of the process keeps its BLAS threads
assert max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == 2
print("no BLAS warning")
"""


@pytest.mark.parametrize("model", ["ALSRecommender"])
def test_fitting_emits_no_blas_thread_pool_warning(model):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENBLAS_NUM_THREADS", None)  # the point is that recforge needs no environment set for it
    done = subprocess.run(
        [sys.executable, "-c", FIT_IN_A_FRESH_PROCESS.format(model=model)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no BLAS warning" in done.stdout
