"""The evaluation stage: backtest candidates on training's folds and report the metrics.

Training (``pipelines/training/train.py``) and ``recforge evaluate`` both call ``load_evaluation_data``
(``pipelines/training/data.py``) and ``backtest_candidates``, so the numbers the gate decides on are
the numbers the command prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from models.evaluation import (
    FROM_SCRATCH,
    BacktestResult,
    EvaluationConfig,
    SegmentBounds,
    backtest,
)
from models.lists.ranked import ListRules
from models.metrics import MetricNames, in_segment
from pipelines.settings import Settings
from pipelines.training.candidates import candidate_factories
from pipelines.training.data import EvaluationData, load_evaluation_data
from pipelines.training.fold_fits import FoldFits

log = logging.getLogger(__name__)


@dataclass
class EvaluationRun:
    """Backtest results per model name (and errors of candidates that failed), and the data they were measured on."""

    data: EvaluationData
    config: EvaluationConfig
    results: dict[str, BacktestResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # candidate -> error, for candidates left out
    refusals: dict[str, str] = field(default_factory=dict)  # candidate -> why the data cannot support it
    run_ids: dict[str, str] = field(default_factory=dict)  # candidate -> its nested MLflow run
    # The newest fold's fits kept between trainings (None: every fold fits from scratch, nothing is kept).
    fold_fits: FoldFits | None = None

    def summaries(self) -> dict[str, dict[str, float]]:
        return {name: result.summary() for name, result in self.results.items()}


def metric_names(settings: Settings) -> MetricNames:
    """The metric names at the configured cut-offs: what the registry, status and gate look up."""
    return MetricNames(settings.eval_k, settings.recall_k)


def best_candidate(summaries: dict[str, dict[str, float]], names: MetricNames) -> str:
    """The candidate with the highest primary metric (mean over folds)."""
    return max(summaries, key=lambda name: summaries[name][names.primary])


def primary_by_candidate(summaries: dict[str, dict[str, float]], names: MetricNames) -> dict[str, float]:
    """``<candidate>.<primary metric>`` for every candidate: logged on the parent run to compare them at a glance."""
    return {f"{name}.{names.primary}": m[names.primary] for name, m in summaries.items()}


def evaluation_config(settings: Settings) -> EvaluationConfig:
    return EvaluationConfig(
        k=settings.eval_k,
        recall_k=settings.recall_k,
        rules=ListRules.from_settings(settings),
        head_share=settings.eval_head_share,
        segments=SegmentBounds(settings.cold_user_below, settings.segment_power_above),
    )


def refusal(factory, data: EvaluationData) -> str | None:
    """Why a candidate cannot be trained on this data (``Recommender.refuses``), asked of every fold and the whole log.

    A model must fit every fold to be compared on their mean, and the whole log to be served.
    """
    model = factory()
    for label, interactions in [*((fold.name, fold.train) for fold in data.folds), ("the whole log", None)]:
        reason = model.refuses(data.full_interactions() if interactions is None else interactions)
        if reason:
            return f"{reason} (on {label})"
    return None


REFUSED_TAG = "refused_candidates"  # on the parent run: every candidate the data could not support, with its reason


def backtest_candidates(factories: dict, run: EvaluationRun, tags: dict[str, str]) -> None:
    """Backtest each candidate in a nested MLflow run of the active run, filling ``run.results``.

    A candidate the data cannot support (``Recommender.refuses``: EASE above its size guard,
    SASRec without sequences, the ranker without enough label windows) is not fitted: its reason
    is logged, kept in ``run.refusals`` and tagged on the active (parent) run as ``refused_candidates``.
    A candidate that raises is left out (its run ends FAILED with an ``error`` tag, the error is
    logged and kept in ``run.failures``), so one broken algorithm cannot block retraining with the
    others; if every candidate is refused or fails, this raises naming each reason. A result keeps its
    first fold's model where the model can carry on from it (``first_fold_model``): the final fit may start there,
    and with ``run.fold_fits`` that fit is kept for the next training, whose first fold may carry on from it
    (pipelines/training/fold_fits.py; the run's ``fold_fit`` tag says how its first fold was fitted).
    """
    import mlflow
    from mlflow import MlflowClient

    from pipelines.training.tracking import log_backtest

    for name, factory in factories.items():
        reason = refusal(factory, run.data)
        if reason:
            run.refusals[name] = reason
            log.info("candidate %s refused: %s", name, reason)
            continue
        with mlflow.start_run(run_name=name, nested=True, tags={**tags, "model": name}) as child:
            run.run_ids[name] = child.info.run_id
            try:
                start, why = first_fold_start(name, factory, run)
                run.results[name] = backtest(
                    factory, run.data.folds, run.data.catalog, run.config, keep_first_model=True, first_fold_start=start
                )
            except Exception as error:
                run.failures[name] = f"{type(error).__name__}: {error}"
                log.error("candidate %s failed and is left out: %s", name, run.failures[name], exc_info=True)
                mlflow.set_tag("error", run.failures[name][:5000])
            else:
                log_backtest(run.results[name], run.config.names)
                keep_first_fold_fit(name, run, child.info.run_id, why)
        if name in run.failures:
            MlflowClient().set_terminated(child.info.run_id, "FAILED")
    if run.refusals:
        mlflow.set_tag(REFUSED_TAG, "; ".join(f"{n}: {r}" for n, r in run.refusals.items())[:5000])
    if not run.results:
        reasons = [
            *(f"{n}: {e}" for n, e in run.failures.items()),
            *(f"{n} refused: {r}" for n, r in run.refusals.items()),
        ]
        what = "failed or was refused" if run.refusals else "failed"
        raise RuntimeError(f"every candidate {what}: " + "; ".join(reasons))


def first_fold_start(name: str, factory, run: EvaluationRun):
    """The kept fit ``name``'s first fold carries on from (None to fit from scratch) and why not, if not."""
    probe = factory()
    if not getattr(probe, "warm_starts", False):
        return None, ""
    if run.fold_fits is None:
        return None, "train_fold_warm_sweeps is 0"
    return run.fold_fits.start_for(name, probe, run.data.folds[0])


def keep_first_fold_fit(name: str, run: EvaluationRun, run_id: str, why: str) -> None:
    """Tag the candidate's run with how its first fold was fitted, and keep that fit for the next training."""
    import mlflow

    result = run.results[name]
    if result.first_fold_model is None:  # a model that cannot carry on from an earlier fit
        return
    fit = result.first_fold_fit if result.first_fold_fit != FROM_SCRATCH else f"{FROM_SCRATCH} ({why or 'declined'})"
    log.info("%s on fold '%s': %s", name, run.data.folds[0].name, fit)
    mlflow.set_tag("fold_fit", fit[:5000])
    if run.fold_fits is None:
        return
    try:
        run.fold_fits.keep(name, result.first_fold_model, run.data.folds[0], run_id, run.data.snapshot, fit)
    except OSError as error:  # a full disk, say: the training stands, the next one fits its fold from scratch
        log.warning("%s: its fold fit was not kept under %s (%s)", name, run.fold_fits.directory, error)


def text_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain aligned table for the terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_table(run: EvaluationRun) -> str:
    """Per model and group (all users, each segment, new items): users and the key metrics, mean +- std."""
    from models.evaluation import SEGMENTS

    metrics = [*run.config.names.accuracy, *run.config.names.beyond_accuracy]
    rows = []
    for name, summary in run.summaries().items():
        for label, prefix in [("all", ""), *((s, in_segment(s, "")) for s in SEGMENTS), ("new_items", "new_items.")]:
            row = [name, label, f"{summary.get(prefix + 'n_eval_users', 0.0):.1f}"]
            row += [f"{summary[prefix + m]:.4f}+-{summary[prefix + m + '_std']:.4f}" for m in metrics]
            rows.append(row)
    return text_table(["model", "group", "users/fold", *metrics], rows)


def run_evaluation(settings: Settings, names: list[str] | None = None) -> tuple[EvaluationRun, Path, str]:
    """``recforge evaluate``: backtest candidates, write the report, log it to MLflow; no registration."""
    import mlflow

    from pipelines.reports.index import write_index
    from pipelines.training.report import write_evaluation_report
    from pipelines.training.threads import set_thread_pools
    from pipelines.training.tracking import code_version, configure

    set_thread_pools(settings)
    configure(settings)
    factories = candidate_factories(settings)
    unknown = sorted(set(names or []) - set(factories))
    if unknown:
        raise ValueError(
            f"{unknown} are not among train_candidates {sorted(factories)} (set RECFORGE_TRAIN_CANDIDATES)"
        )
    data = load_evaluation_data(settings)
    tags = {"data_snapshot": data.snapshot, "split": data.split, "code_version": code_version(), "kind": "evaluation"}
    run = EvaluationRun(data, evaluation_config(settings), fold_fits=FoldFits.from_settings(settings, keeps=False))
    with mlflow.start_run(run_name="evaluation", tags=tags) as parent:
        backtest_candidates({name: factories[name] for name in names or factories}, run, tags)
        summaries = run.summaries()
        best = best_candidate(summaries, run.config.names)
        mlflow.log_metrics(primary_by_candidate(summaries, run.config.names))
        mlflow.set_tag("best_model", best)
        report = write_evaluation_report(settings, run, tags, best=best)
        mlflow.log_artifact(str(report), artifact_path="reports")
    write_index(settings)
    return run, report, parent.info.run_id
