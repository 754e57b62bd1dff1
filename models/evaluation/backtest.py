"""A rolling backtest: fit a model afresh on each fold, score it, report each metric's mean and spread.

One lucky test window should not decide a promotion: the gate reads the mean over folds and the
report shows the standard deviation beside it (population std over folds, ``<metric>_std``).
When folds score a seeded sample of their test users, ``<metric>_se`` is the standard error of
that mean from the sampling of users: sqrt(sum of the folds' squared standard errors) / folds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.evaluation.evaluate import EvaluationConfig, FoldScore, score_fold
from models.evaluation.splits import Fold

log = logging.getLogger(__name__)

STD_SUFFIX = "_std"
FROM_SCRATCH = "from scratch"  # how a fit that did not start from an earlier one is described


@dataclass(frozen=True)
class FoldStart:
    """An earlier fit the first fold's fit carries on from (``Recommender.fit_from``), and what it is (for the record).

    Whoever builds it answers for it: its training data must end no later than the first fold's cutoff, or the
    fold's score would see the test window (pipelines/training/fold_fits.py checks that).
    """

    model: object
    sweeps: int
    label: str


@dataclass
class BacktestResult:
    """One model's scores on every fold, with its fit and evaluation times (seconds)."""

    model: str
    params: dict
    folds: list[FoldScore] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    # The model fitted on the first fold (the newest of time folds), kept when asked and the model can carry on from
    # it (``Recommender.warm_starts``): training's final fit on the whole log starts from it.
    first_fold_model: object | None = field(default=None, repr=False, compare=False)
    # How the first fold was fitted: FROM_SCRATCH, or carried on from a given start (``first_fold_start``).
    first_fold_fit: str = FROM_SCRATCH

    def summary(self) -> dict[str, float]:
        """Mean of every metric over folds, plus ``<metric>_std``, ``fit_seconds`` and ``eval_seconds``."""
        keys = self.folds[0].metrics.keys()
        summary: dict[str, float] = {}
        for key in keys:
            # A fold where a group (a segment, new items) has no user says nothing about it: leave it out.
            counted = group_count_key(key)
            values = np.array(
                [f.metrics[key] for f in self.folds if key == counted or f.metrics.get(counted, 1) > 0],
                dtype=np.float64,
            )
            summary[key] = float(values.mean()) if len(values) else 0.0
            summary[key + STD_SUFFIX] = float(values.std()) if len(values) else 0.0
        for key in self.folds[0].standard_errors:
            counted = group_count_key(key)
            errors = np.array(
                [f.standard_errors[key] for f in self.folds if f.metrics.get(counted, 1) > 0], dtype=np.float64
            )
            summary[key] = float(np.sqrt((errors**2).sum()) / len(errors)) if len(errors) else 0.0
        summary["eval_user_share"] = float(np.mean([f.eval_user_share for f in self.folds]))
        summary["fit_seconds"] = float(np.mean(self.fit_seconds))
        summary["eval_seconds"] = float(np.mean(self.eval_seconds))
        summary["n_folds"] = float(len(self.folds))
        return summary

    def exposure(self, view: str = "rules") -> np.ndarray:
        """Long-tail exposure averaged over folds."""
        return np.mean([fold.exposure[view] for fold in self.folds], axis=0)

    def per_fold(self, metric: str) -> dict[str, float]:
        return {fold.fold: fold.metrics[metric] for fold in self.folds}


def group_count_key(metric: str) -> str:
    """Where the users behind a metric are counted: ``segment.cold.ndcg_at_10`` -> ``segment.cold.n_eval_users``."""
    prefix = metric.rsplit(".", 1)[0] + "." if "." in metric else ""
    return prefix + "n_eval_users"


def backtest(
    make_model: Callable[[], object],
    folds: list[Fold],
    catalog: pd.DataFrame,
    config: EvaluationConfig,
    keep_first_model: bool = False,
    first_fold_start: FoldStart | None = None,
) -> BacktestResult:
    """Fit a fresh model from `make_model()` on each fold's training data and score it.

    ``keep_first_model``: keep the first fold's fitted model on the result (``first_fold_model``) if
    the model can start a later fit from it (``warm_starts``); other models are not held in memory.
    ``first_fold_start``: the first fold's fit carries on from that model for its sweeps (a model that
    declines the start fits from scratch); ``first_fold_fit`` on the result says which it was.
    """
    if not folds:
        raise ValueError("backtest needs at least one fold")
    probe = make_model()
    result = BacktestResult(probe.name, probe.params())
    for fold in folds:
        model = make_model()
        started = time.perf_counter()
        if first_fold_start is not None and not result.folds:
            model.fit_from(fold.train, first_fold_start.model, first_fold_start.sweeps)
            ran = getattr(model, "sweeps_from_start", None)
            if ran is not None:
                result.first_fold_fit = f"carried on from {first_fold_start.label}, {ran} sweeps"
        else:
            model.fit(fold.train)
        fitted = time.perf_counter()
        result.folds.append(score_fold(model, fold, catalog, config))
        result.fit_seconds.append(fitted - started)
        result.eval_seconds.append(time.perf_counter() - fitted)
        if keep_first_model and len(result.folds) == 1 and getattr(model, "warm_starts", False):
            result.first_fold_model = model
        log.info(
            "%s on %s: ndcg@%d %.4f (fit %.1fs, eval %.1fs)",
            result.model,
            fold.name,
            config.k,
            result.folds[-1].metrics[config.names.primary],
            result.fit_seconds[-1],
            result.eval_seconds[-1],
        )
    return result
