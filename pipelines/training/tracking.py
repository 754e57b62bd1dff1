"""MLflow access in one place: tracking URI, experiment, registry aliases."""

from __future__ import annotations

import subprocess

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.settings import REPO_ROOT, Settings

CHAMPION = "champion"
CHALLENGER = "challenger"


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking server and make sure the experiment exists."""
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient()
    if client.get_experiment_by_name(settings.mlflow_experiment) is None:
        # A tracking server decides where artifacts go (it proxies them); a local store keeps them in HOME.
        local = settings.tracking_uri.startswith(("sqlite:", "file:"))
        client.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_location if local else None
        )
    mlflow.set_experiment(settings.mlflow_experiment)
    return client


def version_by_alias(client: MlflowClient, name: str, alias: str):
    """The registered model version behind an alias, or None if the alias is not set."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


HISTORY_TAG = "champion_history"


class RegistryError(RuntimeError):
    pass


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first (a registered-model tag, so it survives any run)."""
    import json

    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def make_champion(client: MlflowClient, name: str, version: str) -> str | None:
    """Move `champion` to `version`, record it in the history; returns the previous champion's version."""
    import json

    previous = version_by_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    history = [v for v in champion_history(client, name) if v != str(version)] + [str(version)]
    if previous is not None and str(previous.version) not in history:
        history.insert(len(history) - 1, str(previous.version))  # set by hand outside recforge: keep it rollbackable
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    if previous is not None:
        client.set_model_version_tag(name, str(version), "previous_champion", str(previous.version))
    return str(previous.version) if previous is not None else None


def make_challenger(client: MlflowClient, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHALLENGER, str(version))


def rollback_champion(client: MlflowClient, name: str) -> tuple[str, str]:
    """Give `champion` back to the version that held it before the current one; returns (from, to)."""
    import json

    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no '{CHAMPION}' alias: nothing to roll back")
    history = champion_history(client, name)
    earlier = [v for v in history if v != str(current.version)]
    if not earlier:
        raise RegistryError(f"{name} v{current.version} is the first champion on record: nothing to roll back to")
    target = earlier[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(earlier))
    client.set_model_version_tag(name, str(current.version), "rolled_back", f"champion returned to v{target}")
    return str(current.version), target


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log_backtest(result, names) -> None:
    """Params, mean and std of every metric, and the per-fold values of the key metrics, on the active run.

    `result` is a ``models.evaluation.BacktestResult``; the key metrics are ``names.key`` (a
    ``models.metrics.MetricNames``), logged with the fold's index as the MLflow step so the UI plots
    the spread.
    """
    mlflow.log_params(result.params)
    mlflow.log_metrics(result.summary())
    for step, fold in enumerate(result.folds):
        mlflow.log_metrics({f"fold.{m}": fold.metrics[m] for m in names.key if m in fold.metrics}, step=step)
    mlflow.set_tag("folds", " | ".join(fold.fold for fold in result.folds))
