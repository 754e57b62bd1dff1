"""The stored best parameters of each tuned model: what the next retraining reuses until a re-tune is due.

One small JSON file, ``RECFORGE_HOME/tuning/best_params.json`` (``Settings.tuning_dir``), written by
the tuner (``pipelines/training/tuning.py``) and read by training. It is a file rather than only an
MLflow run because training must decide *before* it starts a run whether tuning is due, from the
record alone: when and on which data (snapshot, validation windows) each model was tuned, on which
search space, and the MLflow run holding its trials. A record stops being reused when it is older
than ``tune_retune_after_days``, when the model's search space changed (the stored values may lie
outside it), or when drift asks for a re-tune.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from models.search import SearchSpace
from pipelines.settings import Settings

TUNED_PARAMS_FILE = "best_params.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TunedParams:
    """One model's tuning outcome, as stored."""

    model: str
    params: dict  # the searched parameters' best values (fixed and default parameters are not stored)
    metric: str  # what was maximised, e.g. valid.ndcg_at_10
    best_value: float
    default_value: float | None  # the default parameters' value on the same windows (trial 0), if it ran
    tuned_at: str  # ISO 8601, UTC
    data_snapshot: str
    validation_windows: list[str]
    search_space: str  # the space's repr: a changed space invalidates the record
    trials: dict[str, int] = field(default_factory=dict)  # complete / pruned / failed
    run_id: str | None = None  # the MLflow run with the trials

    def age(self, now: datetime) -> timedelta:
        return now - datetime.fromisoformat(self.tuned_at)


def space_signature(space: SearchSpace) -> str:
    """A stable text of a search space, to notice when a model's ranges changed since it was tuned."""
    return repr(sorted(space.items()))


def store_path(settings: Settings) -> Path:
    return settings.tuning_dir / TUNED_PARAMS_FILE


def read_tuned(settings: Settings) -> dict[str, TunedParams]:
    """Every stored record by model name; a missing file is no record, an unreadable one is an error naming it."""
    path = store_path(settings)
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
        return {name: TunedParams(**record) for name, record in document["models"].items()}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a tuned-parameters file ({error}); delete it to re-tune") from error


def write_tuned(settings: Settings, record: TunedParams) -> Path:
    """Add or replace one model's record, atomically (a reader never sees half a file)."""
    path = store_path(settings)
    records = {name: asdict(r) for name, r in read_tuned(settings).items()}
    records[record.model] = asdict(record)
    return write_json_atomically(path, {"version": FORMAT_VERSION, "models": records})


def write_json_atomically(path: Path, document: dict) -> Path:
    """``document`` as ``path`` via a temporary file and a rename: a reader never sees half a file.
    The training records beside this one (pipelines/training/selection.py) are written the same way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
    os.replace(temporary, path)
    return path


def retune_reason(
    record: TunedParams | None, space: SearchSpace, settings: Settings, now: datetime, drift: bool
) -> str | None:
    """Why this model must be tuned again, or None when its stored parameters are still good to reuse."""
    if record is None:
        return "never tuned"
    if drift:
        return "drift was detected"
    if record.search_space != space_signature(space):
        return "its search space changed since it was tuned"
    age = record.age(now)
    if age >= timedelta(days=settings.tune_retune_after_days):
        days = age.total_seconds() / 86_400
        return f"tuned {days:.1f} days ago (tune_retune_after_days={settings.tune_retune_after_days:g})"
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)
