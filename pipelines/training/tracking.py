"""MLflow access in one place: tracking URI, experiment, registry aliases, a local store that moves with its home."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException

from pipelines.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

# The MLflow 3 UI opens an experiment in its classic ML view (runs, metrics, models) rather than the
# GenAI one (traces, evaluations) when the experiment carries this tag; the value is the UI's
# ``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML_KIND = "custom_model_development"

# Every column of MLflow 3's SQL backend that holds an artifact URI (MLflow stores them absolute).
ARTIFACT_URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


class _LinesToLog(io.TextIOBase):
    """A text stream whose every line becomes an INFO record of `logger`."""

    def __init__(self, logger: logging.Logger):
        self.logger, self.pending = logger, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                self.logger.info(line.strip())
        return len(text)


@contextlib.contextmanager
def mlflow_output_logged() -> Iterator[None]:
    """MLflow prints some messages straight to stderr ("Successfully registered model ..."), which an
    Airflow task log shows as errors; inside this block they are INFO records of the "mlflow" logger."""
    with contextlib.redirect_stderr(_LinesToLog(logging.getLogger("mlflow"))):
        yield


def _mlflow_logs_through_logging() -> None:
    """MLflow's logger writes to stderr itself (which an Airflow task log marks as errors); let its
    records propagate to the root logger instead, so a task log shows them at their own level."""
    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking server and make sure the experiment exists."""
    _mlflow_logs_through_logging()
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    rebase_local_store(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        # A tracking server decides where artifacts go (it proxies them); a local store keeps them in HOME.
        local = settings.tracking_uri.startswith(("sqlite:", "file:"))
        client.create_experiment(
            settings.mlflow_experiment,
            artifact_location=settings.mlflow_artifact_location if local else None,
            tags={EXPERIMENT_KIND_TAG: CLASSIC_ML_KIND},
        )
    elif experiment.tags.get(EXPERIMENT_KIND_TAG) != CLASSIC_ML_KIND:  # created before the tag was set
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML_KIND)
    mlflow.set_experiment(settings.mlflow_experiment)
    return client


def rebase_local_store(settings: Settings) -> int:
    """Re-point the embedded store's artifact URIs at this home if the home was copied or moved; how many changed.

    MLflow records every artifact location as an absolute ``file://`` URI (the experiment's, each
    run's, each logged model's, each model version's) and has no relative form for a local store.
    Rather than a tracking server only for the sake of ``mlflow-artifacts:`` URIs, the embedded
    default rewrites the stored prefix on open: a location ending in ``mlflow/artifacts`` that is not
    this home's becomes this home's, in every column of ``ARTIFACT_URI_COLUMNS``, in one transaction
    (all or nothing), before MLflow opens the database. A configured ``mlflow_tracking_uri`` (a
    server, PostgreSQL) owns its artifact root and is left alone.
    """
    database = settings.mlflow_dir / "mlflow.db"
    if settings.mlflow_tracking_uri is not None or not database.exists():
        return 0
    new_root = settings.mlflow_artifact_location
    suffix = "/" + (settings.mlflow_dir / "artifacts").relative_to(settings.home).as_posix()
    con = sqlite3.connect(database, timeout=30)
    try:
        with con:  # one transaction: commits on success, rolls back on any error
            tables = {name for (name,) in con.execute("select name from sqlite_master where type = 'table'")}
            if "experiments" not in tables:
                return 0
            old_roots = {
                root
                for (location,) in con.execute("select distinct artifact_location from experiments")
                if (root := _artifact_root(location, suffix)) is not None and root != new_root
            }
            # MLflow creates its Default experiment (id 0) in ./mlruns of whatever directory it ran in:
            # give it a place in this home too, so no location depends on the working directory.
            changed = con.execute(
                "update experiments set artifact_location = ? where experiment_id = 0 and "
                "(artifact_location is null or substr(artifact_location, 1, ?) != ?)",
                (f"{new_root}/0", len(new_root), new_root),
            ).rowcount
            for old_root in old_roots:
                for table, column in ARTIFACT_URI_COLUMNS:
                    if table not in tables:
                        continue
                    changed += con.execute(
                        f"update {table} set {column} = ? || substr({column}, ?) "  # noqa: S608 (fixed names)
                        f"where substr({column}, 1, ?) = ? "
                        f"and (length({column}) = ? or substr({column}, ?, 1) = '/')",
                        (new_root, len(old_root) + 1, len(old_root), old_root, len(old_root), len(old_root) + 1),
                    ).rowcount
    finally:
        con.close()
    if changed:
        log.info("MLflow store moved with its home: %d artifact locations now under %s", changed, new_root)
    return changed


def _artifact_root(location: str | None, suffix: str) -> str | None:
    """The ``.../mlflow/artifacts`` prefix of a stored location (a root or a folder below it), else None."""
    if not location:
        return None
    end = location.rfind(suffix)
    while end >= 0:
        cut = end + len(suffix)
        if cut == len(location) or location[cut] == "/":
            return location[:cut]
        end = location.rfind(suffix, 0, end)
    return None


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


@dataclass(frozen=True)
class AirflowRun:
    """The Airflow DAG run a training ran in, as the DAG task passes it (``None`` when run from the CLI).

    Tagged on every MLflow run of the training and on the model version, so the MLflow UI links
    back to the task's page (``url``: the task instance's ``log_url`` in the Airflow UI).
    """

    dag_id: str
    run_id: str
    logical_date: str | None = None
    url: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {"airflow.dag_id": self.dag_id, "airflow.run_id": self.run_id}
        if self.logical_date:
            tags["airflow.logical_date"] = self.logical_date
        if self.url:
            tags["airflow.url"] = self.url
        return tags


class WarehouseRelation(DatasetSource):
    """An MLflow dataset source naming a warehouse relation (``marts.interaction_events``) and its engine.

    MLflow's own sources are files, URLs, tables of Spark or Delta; a relation in DuckDB or
    PostgreSQL is none of them, and a file path would pin the data set to one home.
    """

    def __init__(self, relation: str, engine: str):
        self.relation = relation
        self.engine = engine

    @staticmethod
    def _get_source_type() -> str:
        return "warehouse"

    def load(self, **kwargs):
        """The relation's rows now, from the warehouse of the current settings."""
        from pipelines.settings import get_settings
        from pipelines.warehouse.connection import read_frame

        return read_frame(get_settings(), f"select * from {self.relation}")  # noqa: S608 (a relation name)

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False  # only built explicitly, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source) -> WarehouseRelation:
        raise NotImplementedError("a WarehouseRelation is built from a relation name, not resolved")

    def to_dict(self) -> dict[str, str]:
        return {"relation": self.relation, "engine": self.engine}

    @classmethod
    def from_dict(cls, source_dict: dict) -> WarehouseRelation:
        return cls(source_dict["relation"], source_dict["engine"])


class EventLogDataset(Dataset):
    """Training's event log as an MLflow dataset, described from its arrays (no frame of its rows is built).

    - digest: BLAKE2b over every event's integer user and item codes, epoch seconds and weight, and
      over the distinct user and item ids (the codes' meaning): every event counts, in one pass of
      C-speed hashing over the arrays (about a second per 50M events);
    - profile: row, user and item counts and the time span, of the whole log;
    - schema: the columns of the source relation (user_id, item_id, event_ts, weight);
    - source: the relation it was read from (``WarehouseRelation``), which ``load`` reads again.
    """

    def __init__(self, event_log, source: WarehouseRelation, name: str):
        self.event_log = event_log
        super().__init__(source=source, name=name)

    def _compute_digest(self) -> str:
        import hashlib

        import numpy as np

        log = self.event_log
        digest = hashlib.blake2b(digest_size=8)
        for array in (log.users, log.items, log.ts, log.weight):
            digest.update(np.ascontiguousarray(array).data)
        for ids in (log.user_ids, log.item_ids):
            digest.update("\n".join(ids).encode())
        return digest.hexdigest()

    @property
    def profile(self) -> dict:
        log = self.event_log
        return {
            "num_rows": len(log),
            "num_users": len(log.user_ids),
            "num_items": len(log.item_ids),
            "first_event_ts": log.start,
            "last_event_ts": log.end,
        }

    @property
    def schema(self):
        from mlflow.types import ColSpec, Schema

        from models.columns import Columns
        from models.evaluation.splits import EVENT_TS

        return Schema(
            [
                ColSpec("string", Columns.User),
                ColSpec("string", Columns.Item),
                ColSpec("datetime", EVENT_TS),
                ColSpec("double", Columns.Weight),
            ]
        )

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config.update(
            {"schema": json.dumps({"mlflow_colspec": self.schema.to_dict()}), "profile": json.dumps(self.profile)}
        )
        return config


def log_training_data(event_log, relation: str, settings: Settings, snapshot: str) -> None:
    """Log what the active run learned from (an ``EventLog`` read from ``relation``) as an MLflow dataset."""
    dataset = EventLogDataset(event_log, WarehouseRelation(relation, settings.dbt_target), f"{relation}@{snapshot}")
    mlflow.log_input(dataset, context="training", tags={"data_snapshot": snapshot})
