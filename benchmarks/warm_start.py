"""Benchmark: does ALS started from the previous fit's factors reach a fit from scratch in a few sweeps?

    python benchmarks/warm_start.py --home /tmp/scale-large            # a recforge warehouse (the 1M run's)
    python benchmarks/warm_start.py --movielens ml-100k                # or ml-latest-small, from --data-dir
    python benchmarks/warm_start.py --movielens ml-latest-small --chain 6  # trainings one after another

Training fits the chosen model twice: on the newest fold (all but the last ``test_days``, to score
it) and then on the whole log (to serve it). ``final_fit_warm_sweeps`` lets ALS's second fit start
from the first one's factors. This measures what that costs in quality where it can be measured:
one fold later. Two rolling folds ``test_days`` apart; the older fold's ALS fit is the start (the
fold fit of training), the newer fold's training data is "the whole log", its test window the
future both final fits are scored on:

- ``scratch``: ALS fitted from random numbers with the recipe's ``iterations`` (what training did);
- ``from start, N sweeps``: ``fit_from(newer train, start, N)`` for each ``--sweeps`` N.

Each row: NDCG@k and recall of the lists after publication's rules (``score_fold``, the gate's
metrics), ALS's training loss (implicit's objective, lower is better) and the fit's seconds; the
ratios are to ``scratch`` of the same run. The recipe is the home's (its settings and stored tuned
parameters) or, on MovieLens, the settings' defaults.

``--chain N``: the newest fold's fit carried on from the last training's (``train_fold_warm_sweeps``,
pipelines/training/fold_fits.py), training after training. N + 1 rolling folds ``test_days`` apart
(the widest gap a kept fit is used across), oldest first: the oldest fitted from scratch, then each
newer fold's fit carried on from the previous fold's carried fit for the first ``--sweeps`` value,
so every step inherits all the carries before it; beside it, a fit from scratch on the same fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.als import ALSRecommender  # noqa: E402
from models.evaluation import Fold, global_time_folds  # noqa: E402
from models.evaluation.evaluate import EvaluationConfig, score_fold  # noqa: E402
from models.evaluation.splits import SECONDS_PER_DAY  # noqa: E402

log = logging.getLogger("warm_start")


def movielens_folds(
    name: str, data_dir: Path, test_share: float, max_users: int, n_folds: int = 2
) -> tuple[list[Fold], pd.DataFrame]:
    """``n_folds`` folds of a MovieLens set, newest first: its latest ``test_share`` of ratings, each the same span
    before the next."""
    from cold_start import movielens  # the MovieLens log and catalog as the cold-start benchmark reads them

    options = SimpleNamespace(data_dir=data_dir, half_life_days=3650.0, ml_test_share=test_share)
    event_log, catalog, cutoff = movielens(name, options)
    test_days = (event_log.end - cutoff) / SECONDS_PER_DAY
    folds = global_time_folds(event_log, n_folds, test_days, test_days, 30.0)
    return [fold.sample_users(max_users, 7 + j) for j, fold in enumerate(folds)], catalog


def home_folds(home: Path, n_folds: int = 2) -> tuple[list[Fold], pd.DataFrame, EvaluationConfig, dict]:
    """Folds of a recforge home's warehouse as training cuts them, its evaluation config and ALS recipe."""
    os.environ["RECFORGE_HOME"] = str(home)
    scale_run = home / "pipeline_scale.json"  # a scale benchmark's home: the size's settings, as its stages had them
    if scale_run.exists():
        for key, value in json.loads(scale_run.read_text())["settings"].items():
            os.environ.setdefault(f"RECFORGE_{key.upper()}", str(value))
    from pipelines.settings import get_settings
    from pipelines.training.candidates import candidate_params
    from pipelines.training.data import load_evaluation_data
    from pipelines.training.evaluation import evaluation_config
    from pipelines.training.tuned_params import read_tuned

    settings = get_settings().model_copy(update={"backtest_folds": n_folds, "eval_split": "global_time"})
    tuned = {name: record.params for name, record in read_tuned(settings).items()}
    params = candidate_params("als", settings, tuned.get("als"))
    data = load_evaluation_data(settings)
    return data.folds, data.catalog, evaluation_config(settings), params


def measure(label: str, fit, fold: Fold, catalog: pd.DataFrame, config: EvaluationConfig) -> tuple[dict, object]:
    """Fit, score on ``fold``'s test window: the report's row and the fitted model."""
    started = time.perf_counter()
    model = fit()
    seconds = time.perf_counter() - started
    metrics = score_fold(model, fold, catalog, config).metrics
    row = {
        "fit": label,
        "fit_seconds": round(seconds, 1),
        config.names.primary: metrics[config.names.primary],
        config.names.recall: metrics[config.names.recall],
        "training_loss": model.loss(fold.train),
    }
    log.info("%s", row)
    return row, model


def compare(
    newer: Fold,
    older: Fold,
    catalog: pd.DataFrame,
    config: EvaluationConfig,
    params: dict,
    sweeps: list[int],
    seeds: list[int] = (),
) -> list[dict]:
    """The fit from scratch on ``newer``, then one fit per number of sweeps from the fit on ``older``.

    ``seeds``: more fits from scratch, from these random states: how far two fits from scratch differ,
    the yardstick for a carried fit's difference.
    """
    start = ALSRecommender(**params).fit(older.train)
    rows = [measure("scratch", lambda: ALSRecommender(**params).fit(newer.train), newer, catalog, config)[0]]
    for seed in seeds:
        fit = lambda seed=seed: ALSRecommender(**{**params, "random_state": seed}).fit(newer.train)  # noqa: E731
        rows.append(measure(f"scratch, random_state {seed}", fit, newer, catalog, config)[0])
    for n in sweeps:
        fit = lambda n=n: ALSRecommender(**params).fit_from(newer.train, start, n)  # noqa: E731
        rows.append(measure(f"from start, {n} sweeps", fit, newer, catalog, config)[0])
    return rows


def chain(folds: list[Fold], catalog: pd.DataFrame, config: EvaluationConfig, params: dict, sweeps: int) -> list[dict]:
    """Each fold (oldest first) fitted from scratch and carried on from the previous fold's carried fit."""
    carried = ALSRecommender(**params).fit(folds[0].train)
    rows = []
    for step, fold in enumerate(folds[1:], 1):
        scratch, _ = measure(
            "scratch", lambda fold=fold: ALSRecommender(**params).fit(fold.train), fold, catalog, config
        )
        fit = lambda fold=fold, start=carried: ALSRecommender(**params).fit_from(fold.train, start, sweeps)  # noqa: E731
        row, carried = measure(f"carried {step} time(s), {sweeps} sweeps", fit, fold, catalog, config)
        rows.append({"step": step, "fold": fold.name, "scratch": scratch, "carried": row})
    return rows


def print_chain(rows: list[dict], config: EvaluationConfig) -> None:
    primary = config.names.primary
    print(f"| step | fold | {primary} scratch | carried | carried / scratch | loss carried / scratch | fit seconds |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        scratch, carried = row["scratch"], row["carried"]
        print(
            f"| {row['step']} | {row['fold']} | {scratch[primary]:.4f} | {carried[primary]:.4f} "
            f"| {carried[primary] / scratch[primary]:.3f} | {carried['training_loss'] / scratch['training_loss']:.5f} "
            f"| {carried['fit_seconds']} vs {scratch['fit_seconds']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--home", type=Path, help="a recforge home whose warehouse has been built")
    source.add_argument("--movielens", choices=("ml-100k", "ml-latest-small"))
    parser.add_argument("--data-dir", type=Path, help="MovieLens sets; default: the datasets_dir setting")
    parser.add_argument("--test-share", type=float, default=0.05, help="MovieLens: the ratings each test window holds")
    parser.add_argument("--sweeps", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="more fits from scratch from these seeds")
    parser.add_argument("--chain", type=int, default=0, help="N trainings in a row, each fold carried on (see above)")
    parser.add_argument("--out", type=Path, help="write the rows here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if any(n < 1 for n in args.sweeps):
        parser.error(f"--sweeps must be at least 1, got {args.sweeps}")
    if not 0 <= args.chain <= 50:
        parser.error(f"--chain must be between 0 and 50, got {args.chain}")
    n_folds = args.chain + 1 if args.chain else 2

    if args.home:
        folds, catalog, config, params = home_folds(args.home.resolve(), n_folds)
    else:
        from pipelines.settings import Settings

        data_dir = args.data_dir or Settings().datasets_dir
        folds, catalog = movielens_folds(args.movielens, data_dir, args.test_share, 50_000, n_folds)
        config, params = EvaluationConfig(k=10, recall_k=50), {}
    if args.chain:
        rows = chain(folds[::-1], catalog, config, params, args.sweeps[0])
        print(
            f"\nALS {params or 'defaults'}; each newer fold carried on from the one before, {args.sweeps[0]} sweeps\n"
        )
        print_chain(rows, config)
        if args.out:
            args.out.write_text(
                json.dumps({"source": str(args.home or args.movielens), "params": params, "chain": rows})
            )
        return 0
    newer, older = folds
    log.info("start from %s; fit and score %s; ALS %s", older.name, newer.name, params or "defaults")
    rows = compare(newer, older, catalog, config, params, args.sweeps, args.seeds)
    reference = rows[0]
    primary = config.names.primary
    print(f"\n{newer.describe()}\nstart: {older.name}; ALS {params or 'defaults'}\n")
    print(
        f"| fit | seconds | {primary} | {config.names.recall} | training loss | {primary} / scratch | loss / scratch |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['fit']} | {row['fit_seconds']} | {row[primary]:.4f} | {row[config.names.recall]:.4f} "
            f"| {row['training_loss']:.6g} | {row[primary] / reference[primary]:.3f} "
            f"| {row['training_loss'] / reference['training_loss']:.5f} |"
        )
    if args.out:
        args.out.write_text(json.dumps({"source": str(args.home or args.movielens), "params": params, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
