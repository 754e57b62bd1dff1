"""Hyper-parameter tuning of the candidates (Optuna), on validation windows before every test period.

Each model declares its search space beside its constructor (``Recommender.search_space()``,
``models/search.py``); this module translates it into Optuna's ``suggest_*`` calls, so nothing in
``models/`` knows Optuna. What a trial measures:

- **where**: ``tune_valid_folds`` rolling validation windows of ``tune_valid_days``, cut from the
  events *before the earliest backtest cutoff*, so no window overlaps any fold's test period and the
  backtest that compares the candidates (and the gate) is measured on data tuning never saw.
  Only ``global_time`` has such a moment; under the other splits test pairs span the whole log, and
  tuning refuses with that reason (training goes on with stored or default parameters).
- **what**: the primary metric (NDCG@``eval_k`` of the lists after publication's rules, as the gate
  reads it), fitted and scored per window like a backtest fold; the mean over windows is the value.
- **how**: TPE seeded with ``train_random_state`` (the same data gives the same trials); the
  default parameters are trial 0, so tuning never returns something worse than them on validation;
  after each window the trial reports its value and a median pruner stops a trial that is already
  below the median of earlier trials at that window.
- **budget**: ``tune_trials`` per model and ``tune_timeout_seconds`` for the whole tuning, shared
  out between the models still to tune (time one finishes early goes to the next). Optuna checks the
  clock between trials, so the trial under way when the time runs out finishes.

In MLflow each tuned model gets a run ``tuning <model>`` (the search space, the budget, the best
parameters as ``best.<param>``, the best and default validation values) with one nested run per trial
(its parameters and ``valid.<metric>`` per window as steps, its state). The log shows each trial as
it ends: trial n of N, its value, the best so far.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

import pandas as pd

from models.evaluation import EvaluationConfig, global_time_folds, score_fold
from models.evaluation.splits import EventLog, Fold
from models.search import Choice, FloatRange, IntRange, SearchSpace
from pipelines.settings import Settings
from pipelines.training.candidates import candidate_params, model_class
from pipelines.training.data import EvaluationData
from pipelines.training.tuned_params import (
    TunedParams,
    read_tuned,
    retune_reason,
    space_signature,
    store_path,
    utc_now,
    write_tuned,
)

log = logging.getLogger(__name__)

VALID_PREFIX = "valid."


class TuningUnavailable(ValueError):
    """The data or split gives no validation window before the test periods."""


class TuningRefused(TuningUnavailable):
    """A trial's parameters make the model refuse a validation window's training data (``Recommender.refuses``)."""


def refusal_on_windows(cls, params: dict, folds: list[Fold]) -> str | None:
    """Why a model with these parameters cannot be fitted on some validation window, or None.

    Training asks ``refuses`` before every backtest fold; tuning asks it before it gives a model a share of
    the time budget (``tune_and_store``) and before every trial (``_objective``), because the
    validation windows end earlier than any backtest fold and hold fewer days: a model that needs a long
    history (the ranker's label windows) can fit every backtest fold and still not fit the oldest window.
    Asked up front it costs a check, where a trial that finds out at its last window has spent every fit
    before it.
    """
    model = cls(**params)
    for fold in folds:
        reason = model.refuses(fold.train)
        if reason:
            return f"{fold.name}: {reason}"
    return None


def validation_folds(data: EvaluationData, settings: Settings) -> list[Fold]:
    """Rolling validation windows cut from the events before the earliest backtest test period, newest first."""
    if not data.split.startswith("global_time"):
        raise TuningUnavailable(
            f"tuning needs the global_time split: under {data.split} the test pairs span the whole log, "
            "so no validation window can precede them"
        )
    test_start = earliest_test_start(data.folds)
    before = data.log.ts < test_start
    if not before.any():
        raise TuningUnavailable("no event precedes the earliest test period")
    earlier = restrict(data.log, before)
    try:
        folds = global_time_folds(
            earlier,
            settings.tune_valid_folds,
            settings.tune_valid_days,
            settings.tune_valid_days,
            settings.eval_new_item_days,
        )
    except ValueError as error:
        raise TuningUnavailable(
            f"the {(test_start - data.log.start) / 86_400:.1f} days before the earliest test period cannot hold "
            f"{settings.tune_valid_folds} validation window(s) of {settings.tune_valid_days:g} days: {error}"
        ) from error
    return [replace(fold, name=f"validation {fold.name}") for fold in folds]


def earliest_test_start(folds: list[Fold]) -> int:
    """The first moment any backtest fold tests on (a global-time fold tests from its cutoff on)."""
    return min(fold.reference_ts for fold in folds)


def restrict(log: EventLog, mask) -> EventLog:
    """The same log (same user and item codes) with only the masked events."""
    return replace(log, users=log.users[mask], items=log.items[mask], ts=log.ts[mask], weight=log.weight[mask])


def window_label(fold: Fold, valid_days: float) -> str:
    start = pd.Timestamp(fold.reference_ts, unit="s", tz="UTC")
    end = start + pd.Timedelta(days=valid_days)
    return f"{start.isoformat()}/{end.isoformat()}"


@dataclass
class TuningOutcome:
    """What one model's study found."""

    model: str
    best_params: dict
    best_value: float
    default_value: float | None
    trials: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: str | None = None


def class_defaults(cls) -> dict:
    """The constructor's default values, by parameter name."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def suggest(trial, space: SearchSpace) -> dict:
    """One trial's parameters: the model's spec translated into Optuna's calls."""
    params = {}
    for name, spec in space.items():
        if isinstance(spec, FloatRange):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, IntRange):
            params[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Choice):
            params[name] = trial.suggest_categorical(name, list(spec.options))
        else:
            raise TypeError(f"unknown parameter spec {spec!r} for {name}")
    return params


def searchable_space(name: str, settings: Settings) -> SearchSpace:
    """The model's search space without the parameters ``train_model_params`` fixes (an explicit choice wins)."""
    fixed = settings.train_model_params.get(name, {})
    cls = model_class(name)
    space = {p: spec for p, spec in cls.search_space().items() if p not in fixed}
    return space


def tune_model(
    name: str,
    settings: Settings,
    folds: list[Fold],
    catalog: pd.DataFrame,
    config: EvaluationConfig,
    timeout: float,
    tags: dict[str, str] | None = None,
) -> TuningOutcome:
    """One study for one model in a nested MLflow run ``tuning <name>`` of the active run, trials nested in it.

    ``tune_and_store`` has left out a model whose untuned parameters the windows cannot support; a trial
    whose parameters make it refuse one fails before its first fit.
    """
    import mlflow
    import optuna

    space = searchable_space(name, settings)
    if not space:
        raise TuningUnavailable(f"{name} has no search space")
    base = candidate_params(name, settings)
    cls = model_class(name)
    metric = VALID_PREFIX + config.names.primary
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines below say what matters
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.train_random_state),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        study_name=f"recforge-{name}",
    )
    # What training would construct without tuning: the model's own resolved values (a default that
    # depends on another parameter, as BPR's step on its optimizer, is None in the signature).
    untuned = {**class_defaults(cls), **base, **cls(**base).params()}
    defaults = {p: untuned[p] for p, spec in space.items() if p in untuned and spec.contains(untuned[p])}
    if defaults:
        study.enqueue_trial(defaults)  # trial 0: the parameters training would use without tuning
    started = time.perf_counter()
    run_tags = {**(tags or {}), "model": name, "kind": "tuning"}
    with mlflow.start_run(run_name=f"tuning {name}", nested=True, tags=run_tags) as run:
        mlflow.log_params(
            {
                "search_space": space_signature(space)[:6000],
                "trial_budget": settings.tune_trials,
                "time_budget_seconds": round(timeout, 1),
                "validation_windows": " | ".join(window_label(f, settings.tune_valid_days) for f in folds),
                "sampler": f"TPE(seed={settings.train_random_state})",
                "pruner": "median",
            }
        )
        objective = partial(_objective, cls=cls, base=base, space=space, folds=folds, catalog=catalog, config=config)
        progress = _Progress(name, settings.tune_trials, metric, started)
        study.optimize(
            objective, n_trials=settings.tune_trials, timeout=timeout, catch=(Exception,), callbacks=[progress]
        )
        counts = _counts(study)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            mlflow.set_tag("error", f"no trial completed ({counts})")
            raise TuningUnavailable(f"tuning {name}: no trial completed ({counts}); see the trials' errors")
        best = choose_best(study, settings, config, has_default=bool(defaults))
        default_value = study.trials[0].value if defaults and study.trials[0].state.name == "COMPLETE" else None
        mlflow.log_params({f"best.{p}": v for p, v in best.params.items()})
        mlflow.log_metrics(
            {
                f"best_{metric}": best.value,
                **({f"default_{metric}": default_value} if default_value is not None else {}),
                **{f"trials_{state}": float(n) for state, n in counts.items()},
            }
        )
        mlflow.set_tag("best_trial", str(best.number))
        outcome = TuningOutcome(
            name, dict(best.params), float(best.value), default_value, counts, time.perf_counter() - started
        )
        outcome.run_id = run.info.run_id
        mlflow.log_dict({"model": name, "best_params": outcome.best_params, metric: best.value}, "best_params.json")
    log.info(
        "tuning %s done: best %s=%.4f (default %s) with %s after %d trials (%s) in %.1fs",
        name,
        metric,
        outcome.best_value,
        "n/a" if default_value is None else f"{default_value:.4f}",
        outcome.best_params,
        len(study.trials),
        ", ".join(f"{n} {s}" for s, n in counts.items()),
        outcome.seconds,
    )
    return outcome


def _objective(trial, cls, base: dict, space: SearchSpace, folds: list[Fold], catalog, config) -> float:
    """Fit and score one parameter set on each validation window, in a nested MLflow run; pruned when behind."""
    import mlflow
    import optuna

    params = suggest(trial, space)
    metric = VALID_PREFIX + config.names.primary
    with mlflow.start_run(run_name=f"trial {trial.number}", nested=True, tags={"trial": str(trial.number)}):
        mlflow.log_params(params)
        values, guarded = [], {name: [] for name in guardrail_metrics(config)}
        try:
            refused = refusal_on_windows(cls, {**base, **params}, folds)
            if refused:  # these parameters cannot fit some window: fail now, not after the fits before it
                raise TuningRefused(refused)
            for step, fold in enumerate(folds):
                model = cls(**{**base, **params}).fit(fold.train)
                scores = score_fold(model, fold, catalog, config).metrics
                values.append(scores[config.names.primary])
                for name in guarded:
                    guarded[name].append(scores[name])
                mlflow.log_metric(metric, values[-1], step=step)
                trial.report(values[-1], step)
                if step < len(folds) - 1 and trial.should_prune():
                    mlflow.set_tag("state", "pruned")
                    raise optuna.TrialPruned(f"{metric} {values[-1]:.4f} below the median at window {step}")
        except optuna.TrialPruned:
            raise
        except Exception as error:
            mlflow.set_tag("state", "failed")
            mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
            raise
        value = sum(values) / len(values)
        guardrails = {name: sum(v) / len(v) for name, v in guarded.items()}
        trial.set_user_attr("guardrails", guardrails)
        mlflow.log_metrics({f"mean_{metric}": value, **{VALID_PREFIX + n: v for n, v in guardrails.items()}})
        mlflow.set_tag("state", "complete")
        return value


def guardrail_metrics(config: EvaluationConfig) -> list[str]:
    """The metrics the gate holds a challenger to besides the primary one (cold-segment NDCG, coverage)."""
    return [config.names.cold_primary, config.names.coverage]


def choose_best(study, settings: Settings, config: EvaluationConfig, has_default: bool):
    """The complete trial with the best primary metric among those the gate's guardrails would let through.

    Tuning on NDCG alone happily trades coverage or cold users away (on the demo log the best-NDCG
    ALS lost a third of its coverage), and the gate would then reject the tuned model against an
    untuned champion. So a trial counts only if, on the validation windows, its cold-segment NDCG and
    coverage stay within ``gate_max_cold_ndcg_drop`` and ``gate_max_coverage_drop`` of the defaults'
    (trial 0, which always qualifies). Without a default trial, the plain best.
    """
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    reference = study.trials[0] if has_default and study.trials[0].state.name == "COMPLETE" else None
    if reference is None:
        return max(complete, key=lambda t: t.value)
    floor = {
        config.names.cold_primary: 1 - settings.gate_max_cold_ndcg_drop,
        config.names.coverage: 1 - settings.gate_max_coverage_drop,
    }
    limits = {name: reference.user_attrs["guardrails"][name] * share for name, share in floor.items()}
    allowed = [t for t in complete if all(t.user_attrs["guardrails"][n] >= limit for n, limit in limits.items())]
    best = max(allowed, key=lambda t: t.value)
    overall = max(complete, key=lambda t: t.value)
    if overall.number != best.number:
        log.info(
            "tuning: trial %d has the best %s (%.4f) but falls below a guardrail %s; trial %d (%.4f) is chosen",
            overall.number,
            config.names.primary,
            overall.value,
            {n: round(overall.user_attrs["guardrails"][n], 4) for n in limits},
            best.number,
            best.value,
        )
    return best


class _Progress:
    """Optuna callback: one log line per finished trial, with the best so far."""

    def __init__(self, model: str, budget: int, metric: str, started: float):
        self.model, self.budget, self.metric, self.started = model, budget, metric, started

    def __call__(self, study, trial) -> None:
        state = trial.state.name.lower()
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        try:
            best = f"{study.best_value:.4f} (trial {study.best_trial.number}: {study.best_trial.params})"
        except ValueError:  # no trial completed yet
            best = "none yet"
        log.info(
            "tuning %s: trial %d of %d %s %s=%s; best so far %s; %.1fs",
            self.model,
            trial.number + 1,
            self.budget,
            state,
            self.metric,
            value,
            best,
            time.perf_counter() - self.started,
        )


def _counts(study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "failed": 0}
    for trial in study.trials:
        key = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name)
        if key:
            counts[key] += 1
    return counts


def tunable(names: list[str], settings: Settings) -> list[str]:
    """The names among ``names`` that have something to search."""
    return [name for name in names if searchable_space(name, settings)]


def tune_and_store(
    names: list[str],
    settings: Settings,
    data: EvaluationData,
    config: EvaluationConfig,
    tags: dict[str, str] | None = None,
    now: datetime | None = None,
    why_not: dict[str, str] | None = None,
) -> dict[str, TunedParams]:
    """Tune each named model on the validation windows within the shared time budget and store the best.

    Raises ``TuningUnavailable`` when the data give no validation window; a model whose study fails or
    that refuses the windows is logged and left out of the result (its stored record, if any, stays),
    and ``why_not`` (when given) gets the reason under its name.
    """
    folds = validation_folds(data, settings)
    for fold in folds:
        log.info("tuning on %s", fold.describe())
    deadline = time.perf_counter() + settings.tune_timeout_seconds
    names = [name for name in names if not _refuses_windows(name, settings, folds, why_not)]  # no budget share
    stored = {}
    for i, name in enumerate(names):
        timeout = max(deadline - time.perf_counter(), 0.0) / (len(names) - i)
        if timeout <= 0:
            log.warning("tuning %s skipped: the time budget (tune_timeout_seconds) is spent", name)
            _note(why_not, name, "skipped: the time budget (tune_timeout_seconds) was spent")
            continue
        try:
            outcome = tune_model(name, settings, folds, data.catalog, config, timeout, tags)
        except Exception as error:
            log.warning("tuning %s failed and its parameters stay as they were: %s", name, error)
            _note(why_not, name, f"failed: {error}")
            continue
        record = TunedParams(
            model=name,
            params=outcome.best_params,
            metric=VALID_PREFIX + config.names.primary,
            best_value=outcome.best_value,
            default_value=outcome.default_value,
            tuned_at=(now or utc_now()).isoformat(),
            data_snapshot=data.snapshot,
            validation_windows=[window_label(f, settings.tune_valid_days) for f in folds],
            search_space=space_signature(searchable_space(name, settings)),
            trials=outcome.trials,
            run_id=outcome.run_id,
        )
        path = write_tuned(settings, record)
        log.info("tuned parameters of %s stored in %s", name, path)
        stored[name] = record
    return stored


def _refuses_windows(name: str, settings: Settings, folds: list[Fold], why_not: dict[str, str] | None) -> bool:
    """Whether a model refuses the validation windows with its untuned parameters (logged, noted)."""
    reason = refusal_on_windows(model_class(name), candidate_params(name, settings), folds)
    if reason:
        log.warning("tuning %s not possible and its parameters stay as they were: it refuses %s", name, reason)
        _note(why_not, name, f"refused: {name} refuses the validation data ({reason})")
    return bool(reason)


def _note(why_not: dict[str, str] | None, name: str, reason: str) -> None:
    if why_not is not None:
        why_not[name] = reason


def params_for_training(
    names: list[str],
    settings: Settings,
    data: EvaluationData,
    config: EvaluationConfig,
    tags: dict[str, str] | None = None,
    drift: bool = False,
    now: datetime | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Tuned parameters per candidate for this training, tuning those that are due; and where each came from.

    Returns ``(params by model, source by model)``; a source is ``tuned now``, ``reused (tuned at ...)``,
    ``defaults (...)`` with the reason. With ``tune_enabled`` off nothing is tuned or reused.
    """
    if not settings.tune_enabled:
        log.info("tuning off (tune_enabled=false): candidates use settings and class defaults")
        return {}, {name: "defaults (tuning off)" for name in names}
    now = now or utc_now()
    stored = read_tuned(settings)
    due, params, sources = [], {}, {}
    for name in names:
        space = searchable_space(name, settings)
        if not space:
            sources[name] = "defaults (no search space)"
            continue
        reason = retune_reason(stored.get(name), space, settings, now, drift)
        if reason is None:
            record = stored[name]
            params[name] = record.params
            sources[name] = f"reused (tuned at {record.tuned_at} on data snapshot {record.data_snapshot})"
            log.info(
                "%s: reusing tuned parameters %s from %s (%s)",
                name,
                record.params,
                record.tuned_at,
                store_path(settings),
            )
        else:
            log.info("%s: tuning due: %s", name, reason)
            due.append(name)
    if due:
        why_not: dict[str, str] = {}
        try:
            tuned = tune_and_store(due, settings, data, config, tags, now, why_not)
        except TuningUnavailable as error:
            log.warning("tuning not possible: %s", error)
            tuned, why_not = {}, {name: f"not possible: {error}" for name in due}
        for name in due:
            if name in tuned:
                params[name], sources[name] = tuned[name].params, "tuned now"
            elif name in stored:  # tuning failed: the last tuned parameters are still the best known
                params[name] = stored[name].params
                sources[name] = f"reused (tuned at {stored[name].tuned_at}; re-tuning {why_not.get(name, 'failed')})"
            else:
                sources[name] = f"defaults (tuning {why_not.get(name, 'failed')})"
    return params, sources


def run_tuning(settings: Settings, model: str | None = None) -> tuple[dict[str, TunedParams], str]:
    """``recforge tune [--model NAME]``: tune now (whether due or not), store the best; (records, MLflow run id).

    Without a name, every candidate in ``train_candidates`` that has a search space. The name is
    checked before any data is read: an unknown model, or one with nothing to search, fails naming why.
    """
    import mlflow

    from pipelines.training.data import load_evaluation_data
    from pipelines.training.evaluation import evaluation_config
    from pipelines.training.threads import set_thread_pools
    from pipelines.training.tracking import code_version, configure

    if model is not None:
        model_class(model)  # UnknownCandidate names the registered models
        if not searchable_space(model, settings):
            raise TuningUnavailable(
                f"{model} has nothing to tune: its search space is empty or train_model_params fixes all of it"
            )
        names = [model]
    else:
        names = tunable(list(settings.train_candidates), settings)
        if not names:
            raise TuningUnavailable(f"no candidate in train_candidates {settings.train_candidates} has a search space")
    set_thread_pools(settings)
    configure(settings)
    data = load_evaluation_data(settings)
    tags = {"data_snapshot": data.snapshot, "split": data.split, "code_version": code_version(), "kind": "tuning"}
    why_not: dict[str, str] = {}
    with mlflow.start_run(run_name="tuning", tags=tags) as parent:
        stored = tune_and_store(names, settings, data, evaluation_config(settings), tags, why_not=why_not)
    failed = [name for name in names if name not in stored]
    if failed:
        reasons = "; ".join(f"{name} {why_not.get(name, 'failed (see the log above)')}" for name in failed)
        raise RuntimeError(f"tuning did not store parameters for {failed}: {reasons}; stored parameters are unchanged")
    return stored, parent.info.run_id
