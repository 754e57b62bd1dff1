"""The newest backtest fold's fit, kept from one training to the next so that the next fold fit carries on from it.

Why: at production size the fit of ALS on the newest fold is most of a daily training (20 sweeps
from random numbers over ~20M user x item cells: 45% of the day's training at a million users). The
next training's newest fold is the same history plus a day. Started from the kept factors, matched by
id, a few sweeps settle on the new data, as the final fit already does across the two test days
between the fold and the whole log (``train_final_warm_sweeps``; benchmarks/warm_start.py measures
what that keeps).

A kept fit is a start only when it cannot have seen the fold's test window and is near enough to
settle in a few sweeps:

- both are global-time folds (one cutoff for everyone, ``Fold.global_cutoff``);
- its cutoff is at or before the fold's, so its training data ended before the fold's test window;
- the fold's cutoff is at most ``test_days`` after it: no wider a gap than the final fit carries on
  across; a training after a longer pause fits from scratch;
- it is the same candidate with the same parameters.

Otherwise the fold fits from scratch; either way the candidate's run is tagged ``fold_fit``, saying
which and why. A kept fit that cannot be read is a warning and a fit from scratch, never a failed
training: it is only ever a head start.

Layout: ``<models_dir>/fold_fits/<candidate>/`` holds ``fold.json`` (what the fit was trained on) and
``model/``, a saved model bundle with the ids and factors (its seen-items matrix left empty: a start
needs none). Forgetting a user rewrites ``model/`` as it does every saved bundle under ``models_dir``
(pipelines/privacy/forget.py). One fit per candidate: each training's replaces the last.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models import Recommender
from models.evaluation import FoldStart
from models.evaluation.splits import SECONDS_PER_DAY, Fold, cutoff_label
from pipelines.settings import Settings
from pipelines.training.candidates import recorded_params

log = logging.getLogger(__name__)

RECORD, MODEL = "fold.json", "model"
WRITING, REPLACED = ".writing-", ".replaced-"  # prefixes of a replacement's sibling directories (see `keep`)
UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class FoldFits:
    """The kept fold fits under ``directory``; ``sweeps`` and ``max_gap_seconds`` as in the module docstring."""

    directory: Path
    sweeps: int
    max_gap_seconds: int
    # False for `recforge evaluate`: it may start from the kept fits but never replaces them, so an analyst's
    # evaluation (untuned parameters, say) does not leave the next training nothing to carry on from.
    keeps: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, keeps: bool = True) -> FoldFits | None:
        """None when ``train_fold_warm_sweeps`` is 0: every fold fits from scratch and nothing is kept."""
        if settings.train_fold_warm_sweeps < 1:
            return None
        gap = int(settings.test_days * SECONDS_PER_DAY)
        return cls(settings.models_dir / "fold_fits", settings.train_fold_warm_sweeps, gap, keeps)

    def start_for(self, candidate: str, probe: Recommender, fold: Fold) -> tuple[FoldStart | None, str]:
        """The kept fit ``candidate``'s fit on ``fold`` may carry on from, or None and why not."""
        cutoff = fold.global_cutoff
        if cutoff is None:
            return None, f"fold '{fold.name}' is not a global-time fold"
        place = self.directory / candidate
        if not (place / RECORD).exists():
            return None, "no fit kept from an earlier training"
        try:
            record = json.loads((place / RECORD).read_text())
            kept, params, fold_name, run_id = int(record["cutoff"]), record["params"], record["fold"], record["run_id"]
        except UNREADABLE as error:
            log.warning("fold fits: %s is unreadable (%s); fitting from scratch", place / RECORD, error)
            return None, f"the kept fit's record is unreadable ({type(error).__name__})"
        if params != recorded_params(probe.params()):
            return None, f"the kept fit has other parameters ({json.dumps(params, sort_keys=True)})"
        if kept > cutoff:
            return None, f"the kept fit's cutoff {cutoff_label(kept)} is after this fold's {cutoff_label(cutoff)}"
        if cutoff - kept > self.max_gap_seconds:
            days = self.max_gap_seconds / SECONDS_PER_DAY
            gap = f"is more than test_days={days:g} before {cutoff_label(cutoff)}"
            return None, f"the kept fit's cutoff {cutoff_label(kept)} {gap}"
        try:
            model = Recommender.load(place / MODEL)
        except UNREADABLE as error:
            log.warning("fold fits: the kept fit %s cannot be read (%s); fitting from scratch", place / MODEL, error)
            return None, f"the kept fit cannot be read ({type(error).__name__})"
        return FoldStart(model, self.sweeps, f"its fit on fold '{fold_name}' (training run {run_id})"), ""

    def keep(self, candidate: str, model: Recommender, fold: Fold, run_id: str, snapshot: str, fit: str) -> bool:
        """Keep ``model`` (``candidate``'s fit on ``fold``) for the next training; False if it is not kept.

        Only a global-time fold's fit of a model that can carry on is kept. Written beside the kept one
        and swapped in by renames, so a reader finds the old fit, the new one or none, never half of one.
        """
        cutoff = fold.global_cutoff
        if not self.keeps or cutoff is None or not getattr(model, "warm_starts", False):
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers(candidate)
        writing = self.directory / f"{WRITING}{candidate}-{os.getpid()}"
        start = copy.copy(model)  # the ids and factors; the seen items are the fold's, and a start needs none
        start.seen = sp.csr_matrix(model.seen.shape, dtype=np.float32)
        start.save(writing / MODEL)
        record = {
            "candidate": candidate,
            "model": model.name,
            "params": model.params(),
            "fold": fold.name,
            "cutoff": cutoff,
            "strategy": fold.strategy,
            "run_id": run_id,
            "data_snapshot": snapshot,
            "fit": fit,
            "written_at": datetime.now(UTC).isoformat(),
        }
        (writing / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        place = self.directory / candidate
        if place.exists():
            replaced = self.directory / f"{REPLACED}{candidate}-{os.getpid()}"
            os.rename(place, replaced)
            os.rename(writing, place)
            shutil.rmtree(replaced)
        else:
            os.rename(writing, place)
        return True

    def _remove_leftovers(self, candidate: str) -> None:
        """What a training killed half-way through `keep` left (its fit is not the kept one)."""
        for prefix in (WRITING, REPLACED):
            for leftover in self.directory.glob(f"{prefix}{candidate}-*"):
                shutil.rmtree(leftover, ignore_errors=True)


__all__ = ["FoldFits"]
