"""BLAS thread pools, set once where training, evaluation and tuning start.

Two kinds of numeric work share the machine's cores. implicit's fits (ALS, BPR, item-kNN) run
their own threads and want BLAS single-threaded underneath (otherwise OpenBLAS's pool fights
theirs and implicit warns); ``models/factorization.py`` holds BLAS at one thread around each such
fit. Everything else (EASE's solve, scoring users against item factors, metrics) is plain BLAS and
gets ``train_blas_threads`` threads, or the library's default (all cores) when the setting is unset.

threadpoolctl reaches only the BLAS libraries already loaded, so numpy's and scipy's are loaded
first (scipy ships its own OpenBLAS, which numpy's import does not load).
"""

from __future__ import annotations

import logging

from pipelines.settings import Settings

log = logging.getLogger(__name__)


def set_thread_pools(settings: Settings) -> list[dict]:
    """Apply ``train_blas_threads`` to every loaded BLAS for the rest of the process; return the pools as set."""
    import numpy  # noqa: F401  (loads numpy's BLAS)
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import threadpool_info, threadpool_limits

    if settings.train_blas_threads is not None:
        threadpool_limits(settings.train_blas_threads, user_api="blas")
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    log.info(
        "BLAS thread pools: %s (implicit's fits run them at 1)",
        ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in pools) or "none loaded",
    )
    return pools
