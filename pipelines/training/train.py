"""Train the candidate models, backtest them, register the best and let the gate decide its alias.

The flow of one training (one MLflow parent run in experiment ``recforge``):
1. read the event log and the catalog, cut the folds the settings ask for (by default
   ``backtest_folds`` rolling global time cutoffs; ``pipelines/training/evaluation.py``);
2. tune the candidates whose tuned parameters are due (``pipelines/training/tuning.py``: on
   validation windows before every fold's test period; a nested run ``tuning <model>`` each, with its
   trials), or reuse the stored ones;
3. for every candidate in ``train_candidates`` (or, between full selections, the last selection's
   leaders: ``pipelines/training/selection.py``; a nested run each): fit on each fold's training
   data (ALS's fit on the newest fold carries on from the last training's for ``train_fold_warm_sweeps``
   sweeps where that fit cannot have seen the fold's test window: ``pipelines/training/fold_fits.py``),
   score whole-catalog lists after publication's business rules, log each metric's mean and
   spread over folds, overall, per activity segment and on new items;
4. re-fit the champion's recipe on the same folds (reused when it equals a candidate), so both sides
   of the gate are measured on the same data;
5. fit the best candidate on the whole log (ALS carries on from its newest fold's fit for
   ``train_final_warm_sweeps`` sweeps: ``fit_final``), log it as a self-contained pyfunc on that candidate's
   own nested run (so the version's run is the one whose backtest chose it) with the training data
   as an MLflow dataset, and register it as a new version of ``recforge-recommender``;
6. the gate (``pipelines/training/gate.py``): alias ``champion`` if it passes, ``challenger`` if not; the
   decision, each check with its numbers and the evaluation report go on the run, the model version
   (its description) and the log.

Run from the ``recforge_train`` DAG, every run and the version carry the DAG run's ids and a link to
its Airflow task (``AirflowRun``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from models import Recommender
from models.columns import Columns
from models.evaluation import backtest
from models.evaluation.backtest import FROM_SCRATCH, STD_SUFFIX, BacktestResult
from pipelines.reports.bias_audit import audit_training
from pipelines.reports.index import write_index
from pipelines.settings import REPO_ROOT, Settings
from pipelines.training.candidates import UnknownCandidate, candidate_factories, recipe_factory, recorded_params
from pipelines.training.data import EVENTS_RELATION, EvaluationData, load_evaluation_data
from pipelines.training.evaluation import (
    EvaluationRun,
    backtest_candidates,
    best_candidate,
    evaluation_config,
    primary_by_candidate,
)
from pipelines.training.fold_fits import FoldFits
from pipelines.training.gate import GateDecision, decide
from pipelines.training.report import write_evaluation_report
from pipelines.training.selection import candidates_to_backtest, ranked_selection, write_selection
from pipelines.training.tracking import (
    AirflowRun,
    code_version,
    log_backtest,
    log_training_data,
    mlflow_output_logged,
)
from pipelines.training.tuned_params import utc_now
from pipelines.training.tuning import params_for_training

log = logging.getLogger(__name__)

__all__ = ["AirflowRun", "TrainResult", "code_version", "train_and_register"]

# What the registered pyfunc answers, said on every version: it is the model, not serving's lists.
PYFUNC_NOTE = (
    "The pyfunc returns raw model scores: the model's top-k per known user, without publication's business "
    "rules (blocked, out-of-stock and already-purchased items are not removed, no category cap) and without "
    "the popularity fallback (an unknown user gets no rows). What users are served comes from "
    "`recforge publish` (published/<version>/), which applies both."
)


@dataclass
class TrainResult:
    run_id: str
    primary_metric: str  # the name the best model was chosen by, e.g. ndcg_at_10 (from eval_k)
    best_model: str
    model_version: str
    promoted: bool
    decision_reason: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    report: Path | None = None
    failures: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)  # candidates the data could not support, with why

    def summary(self) -> str:
        primary = self.primary_metric
        scores = ", ".join(
            f"{name} {primary}={m[primary]:.4f}+-{m.get(primary + STD_SUFFIX, 0.0):.4f}"
            for name, m in self.metrics.items()
        )
        verdict = "promoted to champion" if self.promoted else "kept as challenger"
        refused = f"; refused {', '.join(self.refusals)}" if self.refusals else ""
        return f"trained {scores}{refused}; {self.best_model} v{self.model_version} {verdict}: {self.decision_reason}"

    def outcome(self) -> dict:
        """What the training DAG passes on (XCom, so plain JSON): the decision, and for a champion its score.

        ``champion_metadata`` is the CHAMPION asset event's metadata as it stands: the model, its
        version and its primary metric under that metric's own name (``ndcg_at_<eval_k>``), so the
        DAG passes it on without spelling a metric name.
        """
        score = {self.primary_metric: self.metrics[self.best_model][self.primary_metric]}
        return {
            "run_id": self.run_id,
            "model": self.best_model,
            "version": self.model_version,
            "promoted": self.promoted,
            "reason": self.decision_reason,
            "checks": self.checks,
            "primary_metric": self.primary_metric,
            "champion_metadata": {"model": self.best_model, "version": self.model_version, **score},
        }


def train_and_register(settings: Settings, airflow: AirflowRun | None = None, drift: bool = False) -> TrainResult:
    """One training (see the module docstring); ``airflow`` is the DAG run it runs in, if any.

    ``drift``: this training was asked for by drift, so tuned parameters are re-tuned even if not yet due.
    """
    import mlflow

    from pipelines.training.threads import set_thread_pools
    from pipelines.training.tracking import configure

    set_thread_pools(settings)
    client = configure(settings)
    factories = candidate_factories(settings)  # an unknown candidate fails before any data is read
    backtested = candidates_to_backtest(settings, utc_now(), drift)
    factories = {name: factory for name, factory in factories.items() if name in backtested.names}
    log.info("candidates: %s (%s)", ", ".join(factories), backtested.why)
    if backtested.folds != settings.backtest_folds:  # between full selections: the newest folds only
        settings = settings.model_copy(update={"backtest_folds": backtested.folds})
    data = load_evaluation_data(settings)
    tags = {"data_snapshot": data.snapshot, "split": data.split, "code_version": code_version()}
    if airflow is not None:
        tags.update(airflow.tags())
    run = EvaluationRun(data, evaluation_config(settings), fold_fits=FoldFits.from_settings(settings))
    with mlflow.start_run(run_name="training", tags=tags) as parent:
        log_training_data(data.log, EVENTS_RELATION, settings, data.snapshot)
        tuned, sources = params_for_training(list(factories), settings, data, run.config, tags, drift=drift)
        factories = {name: f for name, f in candidate_factories(settings, tuned).items() if name in backtested.names}
        mlflow.set_tags({f"params_source.{name}": source[:5000] for name, source in sources.items()})
        mlflow.set_tag("selection", backtested.why[:5000])
        mlflow.log_params(
            {
                "candidates": ",".join(factories),
                "backtest_folds": len(data.folds),
                "promotion_min_lift": settings.promotion_min_lift,
                "gate_max_cold_ndcg_drop": settings.gate_max_cold_ndcg_drop,
                "gate_max_coverage_drop": settings.gate_max_coverage_drop,
                "category_cap": settings.category_cap,
                "gate_max_gini_rise": settings.gate_max_gini_rise,
                "calibration_lambda": settings.calibration_lambda,
                "seller_cap": settings.seller_cap,
                "train_final_warm_sweeps": settings.train_final_warm_sweeps,
                "train_fold_warm_sweeps": settings.train_fold_warm_sweeps,
            }
        )
        backtest_candidates(factories, run, tags)
        if run.failures:
            mlflow.set_tag("failed_candidates", "; ".join(f"{n}: {e}" for n, e in run.failures.items())[:5000])
        summaries = {name: result.summary() for name, result in run.results.items()}
        best = best_candidate(summaries, run.config.names)
        if backtested.full:  # what the trainings until the next full selection backtest
            write_selection(
                settings,
                ranked_selection(
                    settings, summaries, run.config.names.primary, utc_now(), data.snapshot, parent.info.run_id
                ),  # fmt: skip
            )
        champion_version, champion_metrics, basis, champion_label = champion_reference(settings, client, run, tags)

        final, how = fit_final(factories[best], run.results[best], data, settings.train_final_warm_sweeps)
        for result in run.results.values():  # the fold fits' factors are not needed any more
            result.first_fold_model = None
        log.info("final fit of %s on the whole log: %s", best, how)
        with mlflow.start_run(run_id=run.run_ids[best], nested=True):  # the winner's run gets its model
            log_training_data(data.log, EVENTS_RELATION, settings, data.snapshot)
            mlflow.set_tag("final_fit", how)
            version = _log_and_register(final, settings, data, airflow, how)
        try:
            decision = decide(settings, summaries[best], champion_metrics, champion_version, basis)
        except ValueError as error:  # e.g. a champion from before its guardrail metrics were recorded
            decision = GateDecision(
                False,
                f"not comparable with champion v{champion_version} ({basis}): {error}; the champion stays. "
                f"Promote by hand if wanted: recforge models promote {version.version} --force",
                champion_version,
            )
        apply_decision(client, settings, str(version.version), decision)
        client.update_model_version(
            settings.registered_model_name, str(version.version), description=version_description(decision, best)
        )

        mlflow.log_metrics(summaries[best])
        mlflow.log_metrics(primary_by_candidate(summaries, run.config.names))
        mlflow.set_tags({"best_model": best, "model_version": str(version.version), **decision.tags()})
        mlflow.log_dict(_decision_record(decision, best, str(version.version)), "gate.json")
        verdict = "promoted to champion" if decision.promoted else "not promoted (alias challenger)"
        headline = f"{best} v{version.version} {verdict}: {decision.reason()}"
        log.info("gate: %s", headline)
        for check in decision.checks:
            log.info("gate check: %s", check.describe())
        report = write_evaluation_report(
            settings, run, tags, best=best, decision=decision, headline=headline, champion_label=champion_label
        )
        mlflow.log_artifact(str(report), artifact_path="reports")
        audit_training(settings, run, best, champion_label, tags)
    write_index(settings)
    result = TrainResult(
        run_id=parent.info.run_id,
        primary_metric=run.config.names.primary,
        best_model=best,
        model_version=str(version.version),
        promoted=decision.promoted,
        decision_reason=decision.reason(),
        metrics={name: summaries[name] for name in factories if name in summaries},
        checks=[check.describe() for check in decision.checks],
        report=report,
        failures=dict(run.failures),
        refusals=dict(run.refusals),
    )
    log.info(result.summary())
    return result


def fit_final(factory, result: BacktestResult, data: EvaluationData, sweeps: int) -> tuple[Recommender, str]:
    """The model to register, fitted on the whole log, and how it was fitted (a tag on its run and version).

    A model that can carry on from an earlier fit starts from its fit on the first backtest fold (the
    newest: all but the last ``test_days``) for ``sweeps`` sweeps (``train_final_warm_sweeps``); the rest,
    and every model with ``sweeps`` 0, fit from scratch as the backtest did.
    """
    model = factory()
    start = result.first_fold_model
    if start is None or sweeps < 1:
        return model.fit(data.full_interactions()), FROM_SCRATCH
    model.fit_from(data.full_interactions(), start, sweeps)
    ran = getattr(model, "sweeps_from_start", None)
    if ran is None:  # the model declined the start (e.g. another size of factors)
        return model, FROM_SCRATCH
    return model, f"from its fit on fold '{data.folds[0].name}', {ran} sweeps"


def champion_reference(
    settings: Settings, client, run: EvaluationRun, tags: dict[str, str]
) -> tuple[str | None, dict | None, str, str | None]:
    """The champion's metrics on this training's folds: (version, metrics, basis, label in the report).

    Re-fits the champion's recorded recipe on the same folds (or reuses a candidate with the same
    recipe); falls back to the metrics recorded at its own training only when the recipe is gone.
    """
    import mlflow

    from pipelines.training.tracking import CHAMPION, version_by_alias

    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    if champion is None:
        return None, None, "no champion yet", None
    number = str(champion.version)
    algorithm = champion.tags.get("model")
    params = json.loads(champion.tags["model_params"]) if "model_params" in champion.tags else None
    if algorithm is not None and params is not None:
        for name, result in run.results.items():
            if name == algorithm and recorded_params(result.params) == params:
                return number, result.summary(), f"champion's recipe = candidate {name}, same folds", name
        try:
            factory = recipe_factory(algorithm, params)
            factory()  # a recipe whose parameters the class no longer takes fails here, not mid-backtest
        except (UnknownCandidate, TypeError, ValueError) as error:
            log.warning("champion v%s recipe cannot be rebuilt (%s); using its recorded metrics", number, error)
        else:
            label = f"champion v{number} ({algorithm})"
            with mlflow.start_run(run_name=label, nested=True, tags={**tags, "model": algorithm, "role": "champion"}):
                try:
                    run.results[label] = backtest(factory, run.data.folds, run.data.catalog, run.config)
                except Exception as error:
                    log.warning(
                        "champion v%s recipe failed on these folds (%s); using its recorded metrics", number, error
                    )
                    mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
                else:
                    log_backtest(run.results[label], run.config.names)
                    return number, run.results[label].summary(), "champion's recipe re-fitted on the same folds", label
    recorded = client.get_run(champion.run_id).data.metrics
    snapshot = client.get_run(champion.run_id).data.tags.get("data_snapshot", "unknown")
    basis = f"recorded metrics of champion v{number} (data snapshot {snapshot}), not the same folds"
    return number, recorded, basis, None


def apply_decision(client, settings: Settings, version: str, decision: GateDecision) -> None:
    """Alias the version by the decision (champion, with history; else challenger) and tag it with the reasons."""
    from pipelines.training.tracking import make_challenger, make_champion

    name = settings.registered_model_name
    if decision.promoted:
        make_champion(client, name, version)
    else:
        make_challenger(client, name, version)
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, version, key, value)


def version_description(decision: GateDecision, best: str) -> str:
    """The model version's description in the MLflow UI: the gate's verdict, each check with its numbers, the pyfunc."""
    verdict = "Promoted to champion" if decision.promoted else "Not promoted (alias challenger)"
    lines = [f"**{verdict}** ({best}): {decision.reason()}", "", f"Basis: {decision.basis}"]
    if decision.checks:
        lines += ["", "Gate checks:", *(f"- {check.describe()}" for check in decision.checks)]
    return "\n".join([*lines, "", PYFUNC_NOTE])


def _decision_record(decision: GateDecision, best: str, version: str) -> dict:
    return {
        "model": best,
        "version": version,
        "promoted": decision.promoted,
        "basis": decision.basis,
        "champion_version": decision.champion_version,
        "reason": decision.reason(),
        "checks": [
            {
                "name": c.name,
                "metric": c.metric,
                "challenger": c.challenger,
                "challenger_std": c.challenger_std,
                "champion": c.champion,
                "champion_std": c.champion_std,
                "required": c.required,
                "rule": c.rule,
                "passed": c.passed,
            }
            for c in decision.checks
        ],
    }


def _log_and_register(
    model: Recommender, settings: Settings, data: EvaluationData, airflow: AirflowRun | None, final_fit: str
):
    """Log the model as a self-contained pyfunc on the active run and register it; return the new model version."""
    import warnings

    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    example = pd.DataFrame({Columns.User: [str(model.user_ids[0])]})
    output = pd.DataFrame({Columns.User: ["u"], Columns.Rank: [1], Columns.Item: ["i"], Columns.Score: [1.0]})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), mlflow_output_logged():
        # MLflow warns that integer columns cannot hold missing values: ranks never are missing.
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        bundle = model.save(Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("mlflow_model.py")),  # models from code
            artifacts={"bundle": str(bundle)},
            code_paths=[str(REPO_ROOT / "models")],
            signature=infer_signature(example, output, params={"k": 10}),
            input_example=example,
            # An algorithm needing more (lightgbm, torch) names it in a `pip_requirements` class attribute.
            pip_requirements=[
                "numpy",
                "pandas",
                "scipy",
                "implicit",
                "mlflow",
                *getattr(model, "pip_requirements", []),
            ],
            registered_model_name=settings.registered_model_name,
            tags={"model": model.name, "data_snapshot": data.snapshot},
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    # The recipe lets a later training re-fit this model on its own folds for a like-for-like gate.
    for key, value in {
        "model": model.name,
        "model_params": json.dumps(model.params(), sort_keys=True),
        "data_snapshot": data.snapshot,
        "split": data.split,
        "final_fit": final_fit,
        **(airflow.tags() if airflow is not None else {}),
    }.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)
    return client.get_model_version(settings.registered_model_name, version)
