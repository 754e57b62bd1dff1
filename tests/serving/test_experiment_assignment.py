"""Assignment (serving/experiments.py): sticky across processes, shares respected, experiments independent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
from scipy import stats

from serving.experiments import assign, bucket

SHARES = [("control", 0.45), ("challenger", 0.45), ("holdback", 0.10)]
USERS = [f"user-{i}" for i in range(20_000)]

ASSIGN_IN_A_FRESH_PROCESS = """
import json, sys
from serving.experiments import assign
shares = [("control", 0.45), ("challenger", 0.45), ("holdback", 0.10)]
print(json.dumps([assign(f"user-{i}", "home-ab", shares, "s1") for i in range(2000)]))
"""


def test_a_user_gets_the_same_variant_in_two_processes():
    """Two interpreters with different hash seeds (as two replicas would have) assign alike, and like this one."""
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", ASSIGN_IN_A_FRESH_PROCESS], env=env, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        outputs.append(json.loads(done.stdout))
    here = [assign(f"user-{i}", "home-ab", SHARES, "s1") for i in range(2000)]
    assert outputs[0] == outputs[1] == here
    assert set(here) == {"control", "challenger", "holdback"}


def test_shares_are_respected():
    counts = Counter(assign(u, "home-ab", SHARES, "s1") for u in USERS)
    observed = [counts[name] for name, _ in SHARES]
    expected = [share * len(USERS) for _, share in SHARES]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    assert abs(counts["holdback"] / len(USERS) - 0.10) < 0.01


def test_two_experiments_assign_independently():
    """Chi-square of the joint assignment of two experiments (a 3x2 contingency table): no dependence."""
    first = [assign(u, "home-ab", SHARES, "s1") for u in USERS]
    second = [assign(u, "similar-items", [("a", 0.5), ("b", 0.5)]) for u in USERS]
    table = np.zeros((3, 2))
    rows, cols = {n: i for i, (n, _) in enumerate(SHARES)}, {"a": 0, "b": 1}
    for one, two in zip(first, second, strict=True):
        table[rows[one], cols[two]] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_the_independence_check_can_fail():
    """The same experiment under two names shares nothing, but the same name twice is fully dependent."""
    first = [assign(u, "home-ab", [("a", 0.5), ("b", 0.5)]) for u in USERS[:2000]]
    table = np.zeros((2, 2))
    for one in first:
        table[int(one == "b"), int(one == "b")] += 1
    assert stats.chi2_contingency(table).pvalue < 1e-6


def test_a_new_salt_reshuffles_users():
    same = sum(bucket(u, "home-ab", "s1") < 0.5 and bucket(u, "home-ab", "s2") < 0.5 for u in USERS[:4000])
    assert 800 < same < 1200  # about a quarter: the two salts are unrelated


def test_shares_below_one_leave_users_out():
    assert {assign(u, "partial", [("a", 0.2)]) for u in USERS[:500]} == {"a", None}
