"""Train candidate models on the time-based split, evaluate them, register the best, gate promotion.

The flow of one training:
1. read ``marts.interactions_split``: fit on train + valid, hold out the last test_days;
2. fit each candidate, score whole-catalog top-k lists for every held-out user
   (items seen in training excluded) and compute NDCG@k and Recall@k;
3. refit the best candidate on the whole log, log it to MLflow as a pyfunc and register it;
4. promote it to ``champion`` only if it beats the current champion's NDCG by the lift in
   settings; otherwise it stays ``challenger``. The decision and its reason are logged.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models import ALSRecommender, PopularityRecommender, Recommender
from models.columns import Columns
from models.dataset import Interactions
from models.metrics import calc_metrics
from pipelines.evaluation_report import write_evaluation_report
from pipelines.reports import write_index
from pipelines.settings import REPO_ROOT, Settings
from pipelines.warehouse import read_frame

log = logging.getLogger(__name__)

PRIMARY_METRIC = "ndcg_at_10"


@dataclass
class TrainResult:
    run_id: str
    best_model: str
    model_version: str
    promoted: bool
    decision_reason: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        scores = ", ".join(f"{name} {PRIMARY_METRIC}={m[PRIMARY_METRIC]:.4f}" for name, m in self.metrics.items())
        verdict = "promoted to champion" if self.promoted else "kept as challenger"
        return f"trained {scores}; {self.best_model} v{self.model_version} {verdict}: {self.decision_reason}"


@dataclass
class SplitData:
    train: Interactions
    relevant: object  # users x items sparse matrix of held-out items not seen in training
    full: Interactions
    snapshot: str


def candidates(settings: Settings) -> list[Recommender]:
    return [
        PopularityRecommender(random_state=settings.sim_seed),
        ALSRecommender(
            factors=settings.als_factors,
            regularization=settings.als_regularization,
            iterations=settings.als_iterations,
            alpha=settings.als_alpha,
            random_state=settings.sim_seed,
        ),
    ]


def load_split(settings: Settings) -> SplitData:
    frame = read_frame(settings, "select user_id, item_id, split, weight, last_ts from marts.interactions_split")
    if frame.empty:
        raise ValueError("marts.interactions_split is empty: nothing to train on")
    if not (frame[Columns.Split] == "test").any():
        raise ValueError("marts.interactions_split has no test rows: the log is shorter than test_days")
    history = (
        frame[frame[Columns.Split] != "test"]
        .groupby([Columns.User, Columns.Item], as_index=False)[Columns.Weight]
        .sum()
    )
    train = Interactions.from_frame(history)
    test = Interactions.from_frame(frame[frame[Columns.Split] == "test"], train.item_ids, train.user_ids)
    seen = (train.matrix > 0).astype(np.float32)
    relevant = ((test.matrix > 0).astype(np.float32) - (test.matrix > 0).multiply(seen)).tocsr()
    relevant.eliminate_zeros()
    everything = frame.groupby([Columns.User, Columns.Item], as_index=False)[Columns.Weight].sum()
    snapshot = str(frame["last_ts"].max())
    return SplitData(train, relevant, Interactions.from_frame(everything), snapshot)


def evaluate(model: Recommender, data: SplitData, settings: Settings) -> dict[str, float]:
    users = np.flatnonzero(np.asarray(data.relevant.sum(axis=1)).ravel() > 0)
    k = max(settings.eval_k, settings.recall_k)
    items, _ = model.recommend(users, k)
    return calc_metrics(items, data.relevant[users], settings.eval_k, settings.recall_k)


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_and_register(settings: Settings) -> TrainResult:
    import mlflow

    from pipelines.tracking import configure

    client = configure(settings)
    data = load_split(settings)
    log.info(
        "training on %d users x %d items (%d interactions), evaluating %d held-out users",
        data.train.n_users,
        data.train.n_items,
        data.train.matrix.nnz,
        int((data.relevant.sum(axis=1) > 0).sum()),
    )
    tags = {
        "data_snapshot": data.snapshot,
        "split": f"global_time_cutoff:test_days={settings.test_days}",
        "code_version": code_version(),
    }
    results: dict[str, dict[str, float]] = {}
    with mlflow.start_run(run_name="training", tags=tags) as parent:
        for model in candidates(settings):
            started = time.perf_counter()
            with mlflow.start_run(run_name=model.name, nested=True, tags={**tags, "model": model.name}):
                model.fit(data.train)
                fit_seconds = time.perf_counter() - started
                metrics = evaluate(model, data, settings)
                metrics["fit_seconds"] = fit_seconds
                mlflow.log_params(model.params())
                mlflow.log_metrics(metrics)
            results[model.name] = metrics
            log.info("%s: %s", model.name, {k: round(v, 4) for k, v in metrics.items()})

        best_name = max(results, key=lambda name: results[name][PRIMARY_METRIC])
        mlflow.log_metrics({f"{name}.{k}": v for name, m in results.items() for k, v in m.items()})
        mlflow.log_metrics({k: v for k, v in results[best_name].items()})
        mlflow.set_tag("best_model", best_name)

        final = next(m for m in candidates(settings) if m.name == best_name).fit(data.full)
        version = _log_and_register(final, settings, data)
        promoted, reason = promote_if_better(client, settings, version, results[best_name][PRIMARY_METRIC])
        mlflow.set_tags({"promotion.decision": "promoted" if promoted else "rejected", "promotion.reason": reason})
        decision = f"{best_name} v{version.version} {'promoted to champion' if promoted else 'not promoted'}: {reason}"
        report = write_evaluation_report(settings, results, decision, tags)
        mlflow.log_artifact(str(report), artifact_path="reports")
    write_index(settings)
    result = TrainResult(parent.info.run_id, best_name, str(version.version), promoted, reason, results)
    log.info(result.summary())
    return result


def _log_and_register(model: Recommender, settings: Settings, data: SplitData):
    """Log the model as a self-contained pyfunc and register it; return the new model version."""
    import warnings

    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    example = pd.DataFrame({Columns.User: [str(model.user_ids[0])]})
    output = pd.DataFrame({Columns.User: ["u"], Columns.Rank: [1], Columns.Item: ["i"], Columns.Score: [1.0]})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # MLflow warns that integer columns cannot hold missing values: ranks never are missing.
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        bundle = model.save(Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(REPO_ROOT / "pipelines" / "mlflow_model.py"),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(REPO_ROOT / "models")],
            signature=infer_signature(example, output, params={"k": 10}),
            input_example=example,
            pip_requirements=["numpy", "pandas", "scipy", "implicit", "mlflow"],
            registered_model_name=settings.registered_model_name,
            tags={"model": model.name, "data_snapshot": data.snapshot},
        )
    return MlflowClient().get_model_version(settings.registered_model_name, str(info.registered_model_version))


def promote_if_better(client, settings: Settings, version, challenger_score: float) -> tuple[bool, str]:
    """Set `champion` on this version only if it beats the champion's held-out NDCG by more than the lift."""
    from pipelines.tracking import CHALLENGER, CHAMPION, version_by_alias

    name = settings.registered_model_name
    champion = version_by_alias(client, name, CHAMPION)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return True, f"no champion yet; {PRIMARY_METRIC}={challenger_score:.4f}"
    champion_score = client.get_run(champion.run_id).data.metrics.get(PRIMARY_METRIC, 0.0)
    needed = champion_score * (1 + settings.promotion_min_lift)
    if challenger_score > needed:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return True, (
            f"{PRIMARY_METRIC} {challenger_score:.4f} > champion v{champion.version} {champion_score:.4f} "
            f"x (1 + {settings.promotion_min_lift})"
        )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return False, (
        f"{PRIMARY_METRIC} {challenger_score:.4f} < {needed:.4f} needed to replace champion v{champion.version}"
    )
