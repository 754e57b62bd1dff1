"""benchmarks/warm_start.py on MovieLens 100k: the fit from scratch, then one row per number of sweeps from the
older fold's fit, each scored on the newer fold; what it times is ``ALSRecommender.fit_from`` (tests/models)."""

import os

import pytest

from pipelines.settings import Settings
from tests.conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("warm_start")


@pytest.fixture(scope="module")
def movielens_100k():
    path = Settings().datasets_dir
    if not (path / "ml-100k").exists():
        message = f"data set {path / 'ml-100k'} not found (set RECFORGE_DATASETS_DIR)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    return path


def test_it_compares_a_fit_from_scratch_with_fits_from_the_older_folds_factors(bench, movielens_100k):
    from models.evaluation.evaluate import EvaluationConfig

    (newer, older), catalog = bench.movielens_folds("ml-100k", movielens_100k, 0.05, 500)
    assert newer.reference_ts > older.reference_ts and newer.train.matrix.nnz > older.train.matrix.nnz
    rows = bench.compare(newer, older, catalog, EvaluationConfig(k=10, recall_k=50), {"iterations": 6}, [1, 3])
    assert [row["fit"] for row in rows] == ["scratch", "from start, 1 sweeps", "from start, 3 sweeps"]
    assert all(0 < row["ndcg_at_10"] < 1 and row["training_loss"] > 0 for row in rows)
    assert rows[2]["training_loss"] < rows[1]["training_loss"]  # each sweep lowers ALS's objective


def test_zero_sweeps_are_refused_naming_the_option(bench, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["warm_start.py", "--movielens", "ml-100k", "--sweeps", "3", "0"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--sweeps must be at least 1, got [3, 0]" in capsys.readouterr().err
