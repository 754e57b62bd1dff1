"""MLflow access in one place: tracking URI, experiment, registry aliases."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.settings import Settings

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
