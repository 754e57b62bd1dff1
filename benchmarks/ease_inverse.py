"""Benchmark: EASE's one cubic step, the inverse of Gram + λI, by Cholesky in place against the LU inverse.

    python benchmarks/ease_inverse.py --items 6000 --pairs 5

Builds the Gram matrix of a random binary users x items matrix (float32, λ = 250 on the diagonal,
as EASE's default), then times, in alternating pairs on fresh copies, ``models.ease.cholesky_inverse``
(LAPACK potrf + potri, what EASE now uses) and ``numpy.linalg.inv`` (LU, what it used before). Prints
each pair, the median ratio Cholesky / LU with its range, and the largest difference between the two
inverses relative to the largest entry. Appends the record to benchmarks/results/ease_inverse.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paired_results import append_result, ratio_summary  # noqa: E402

from models.ease import cholesky_inverse  # noqa: E402


def gram_matrix(n_items: int, n_users: int, per_user: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.zipf(1.3, size=n_users * per_user) % n_items  # a popularity skew, as in real logs
    binary = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    binary.data[:] = 1.0
    gram = np.ascontiguousarray((binary.T @ binary).toarray())
    gram[np.diag_indices(n_items)] += 250.0
    return gram


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    gram = gram_matrix(args.items, args.users, 20, seed=0)
    pairs = []
    for pair in range(args.pairs):
        started = time.perf_counter()
        lu = np.linalg.inv(gram)
        lu_seconds = time.perf_counter() - started
        work = gram.copy()
        started = time.perf_counter()
        cholesky = cholesky_inverse(work)
        cholesky_seconds = time.perf_counter() - started
        error = float(np.abs(cholesky - lu).max() / np.abs(lu).max())
        pairs.append({"lu": lu_seconds, "cholesky": cholesky_seconds, "ratio": cholesky_seconds / lu_seconds})
        print(f"pair {pair + 1}: LU {lu_seconds:.2f} s, Cholesky {cholesky_seconds:.2f} s, "
              f"ratio {cholesky_seconds / lu_seconds:.3f}, max relative difference {error:.1e}")  # fmt: skip
        del lu, cholesky, work
    record = {
        "measured_at": datetime.now(UTC).isoformat(), "items": args.items, "users": args.users,
        **ratio_summary(pairs, "Cholesky / LU"),
        "median_lu_seconds": statistics.median(p["lu"] for p in pairs),
        "median_cholesky_seconds": statistics.median(p["cholesky"] for p in pairs), "pairs": pairs,
    }  # fmt: skip
    append_result("ease_inverse", record)


if __name__ == "__main__":
    main()
