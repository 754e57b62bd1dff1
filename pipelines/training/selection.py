"""Which candidates a training backtests: every one (a full model selection) or the leaders of the last one.

Backtesting every candidate is most of a training's cost: at 100k users x 20k items, 30 of the 32
minutes (benchmarks/README.md), so a daily retraining of every candidate cannot fit a daily window,
while which algorithm wins changes slowly. With ``selection_interval_days`` > 0, a training within that
many days of the last full selection backtests only that selection's ``selection_keep`` best candidates
(the gate still compares the winner with the champion on the same folds). The full selection runs
again when its record is older, when ``train_candidates`` changed since, when drift asked for the
training, or when there is no record.

Such a training can also score them on fewer folds (``selection_folds``, the newest ones): the
full selection decides which algorithm is in the race on every fold, the training between decides
whether today's refit beats the champion, which the gate measures on the same folds either way.

The record is one small JSON file, ``RECFORGE_HOME/tuning/selection.json`` (beside the tuned
parameters, for the same reason: training decides before it starts a run), written after every full
selection.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from pipelines.settings import Settings
from pipelines.training.tuned_params import write_json_atomically

SELECTION_FILE = "selection.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Selection:
    """The outcome of one full selection, as stored."""

    selected_at: str  # ISO 8601, UTC
    candidates: list[str]  # train_candidates at the time, in order
    ranking: list[str]  # the candidates that produced a result, best first by `metric`
    metric: str
    values: dict[str, float]  # each ranked candidate's `metric`
    data_snapshot: str
    run_id: str | None = None  # the training's MLflow run


def selection_path(settings: Settings) -> Path:
    return settings.tuning_dir / SELECTION_FILE


def read_selection(settings: Settings) -> Selection | None:
    """The stored selection; a missing file is none, an unreadable one is an error naming it."""
    path = selection_path(settings)
    if not path.exists():
        return None
    try:
        return Selection(**json.loads(path.read_text())["selection"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a model-selection file ({error}); delete it to run a full selection"
        ) from error


def write_selection(settings: Settings, selection: Selection) -> Path:
    """Replace the record atomically (a reader never sees half a file)."""
    return write_json_atomically(selection_path(settings), {"version": FORMAT_VERSION, "selection": asdict(selection)})


def full_selection_reason(record: Selection | None, settings: Settings, now: datetime, drift: bool) -> str | None:
    """Why this training must backtest every candidate, or None when the last selection's leaders will do."""
    if settings.selection_interval_days == 0:
        return "selection_interval_days is 0"
    if record is None:
        return "no full selection recorded yet"
    if drift:
        return "drift was detected"
    if record.candidates != list(settings.train_candidates):
        return f"train_candidates changed since the last full selection ({', '.join(record.candidates)})"
    age = now - datetime.fromisoformat(record.selected_at)
    if age >= timedelta(days=settings.selection_interval_days):
        return (
            f"the last full selection is {age.total_seconds() / 86_400:.1f} days old "
            f"(selection_interval_days={settings.selection_interval_days:g})"
        )
    if not record.ranking:
        return "the last full selection ranked no candidate"
    return None


class Backtested(NamedTuple):
    names: list[str]  # in train_candidates order
    why: str  # one sentence, for the log and the run's ``selection`` tag
    full: bool  # a full selection: its outcome becomes the record
    folds: int  # backtest folds this training scores on


def folds_between_selections(settings: Settings) -> int:
    """How many backtest folds a training between full selections scores: ``selection_folds``, at most all."""
    return min(settings.selection_folds or settings.backtest_folds, settings.backtest_folds)


def candidates_to_backtest(settings: Settings, now: datetime, drift: bool) -> Backtested:
    """The candidates this training backtests, and why."""
    record = read_selection(settings)
    reason = full_selection_reason(record, settings, now, drift)
    if reason is not None:
        return Backtested(list(settings.train_candidates), f"full selection: {reason}", True, settings.backtest_folds)
    leaders = record.ranking[: settings.selection_keep]
    ranked = ", ".join(f"{name} {record.values[name]:.4f}" for name in leaders)
    folds = folds_between_selections(settings)
    scored = (
        "every fold" if folds == settings.backtest_folds else f"the newest {folds} of {settings.backtest_folds} folds"
    )
    return Backtested(
        [name for name in settings.train_candidates if name in leaders],
        f"the leaders of the full selection of {record.selected_at[:16]} by {record.metric} ({ranked}), on {scored}; "
        f"the next full selection is due {settings.selection_interval_days:g} day(s) after it",
        False,
        folds,
    )


def ranked_selection(
    settings: Settings, summaries: dict[str, dict[str, float]], metric: str, now: datetime, snapshot: str,
    run_id: str | None,
) -> Selection:  # fmt: skip
    """The record of a full selection from its candidates' summaries (best first by ``metric``)."""
    ranking = sorted(summaries, key=lambda name: summaries[name][metric], reverse=True)
    return Selection(
        selected_at=now.isoformat(),
        candidates=list(settings.train_candidates),
        ranking=ranking,
        metric=metric,
        values={name: float(summaries[name][metric]) for name in ranking},
        data_snapshot=snapshot,
        run_id=run_id,
    )
