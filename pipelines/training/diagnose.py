"""`recforge diagnose USER`: why one user's list missed (or hit) what they went on to interact with.

It lives in training because it is a backtest of one user: the champion's recipe (algorithm and
parameters, read from the registry) is refitted on the training data of the backtest's newest fold
(``make_folds``, the split training evaluates on), so the user's held-out items are really held
out, and the lists are built by the same rule code evaluation and publication use. The analysis
itself is ``models/evaluation/diagnosis.py``; the text and the HTML page are
``pipelines/reports/diagnosis_report.py``.

Which models count as candidate generators: for the two-stage ranker, the generators inside it
(fitted with it); for any other champion, the champion itself and the other configured candidates
(with their tuned parameters when tuning is on), except the ranker, which is not cheap to fit and
whose generators are those candidates anyway. A candidate that refuses the data is listed with
its reason.

Targets: the user's held-out items in that fold. A user with none there (no interaction in the
test window, or no history before it) gets their own last ``eval_leave_last_n`` items held out
instead (:func:`models.evaluation.splits.user_last_n_fold`), and the report says so. A user the
champion does not know gets the popularity fallback in the publication: the report shows that
list, and the command exits with ``EXIT_UNKNOWN_USER``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from models.base import Recommender
from models.evaluation.diagnosis import FALLBACK, ListEntry, UserDiagnosis, diagnose_user
from models.evaluation.splits import Fold, user_last_n_fold
from models.lists.ranked import ListRules
from models.lists.rules import allowed_and_categories, catalog_status, seller_codes
from models.lists.stored import fallback_list
from pipelines.settings import Settings
from pipelines.training.candidates import candidate_factories, recipe_factory
from pipelines.training.data import make_folds, read_catalog, read_event_log

log = logging.getLogger(__name__)

EXIT_UNKNOWN_USER = 3  # `recforge diagnose` exit status for a user who gets the fallback list


class DiagnoseError(ValueError):
    pass


@dataclass
class FittedFold:
    """The models of one fold: the champion's recipe and the candidate generators, all on ``fold.train``."""

    fold: Fold
    final: Recommender
    generators: list[tuple[str, Recommender]]
    skipped: dict[str, str] = field(default_factory=dict)
    note: str = ""


class Diagnoser:
    """The champion, the catalog and the event log read once; each user's diagnosis reuses them.

    The backtest fold's models are fitted on first use and kept, so diagnosing many users (the
    tests, an analyst's loop) costs one fit; a user diagnosed on their own last items costs one more.
    """

    def __init__(self, settings: Settings, k: int | None = None, depth: int = 100):
        from pipelines.publication.publish import load_champion

        self.settings = settings
        self.k = settings.eval_k if k is None else k
        self.depth = depth
        self.rules = ListRules.from_settings(settings)
        if not 1 <= self.k <= self.depth:
            raise DiagnoseError(f"need 1 <= k <= depth, got --k {self.k} and --depth {self.depth}")
        if self.k > self.rules.top_n:
            raise DiagnoseError(f"--k {self.k} is more than the {self.rules.top_n} items a list holds (publish_top_n)")
        self.champion, self.facts = load_champion(settings)
        self.catalog = read_catalog(settings)
        self._log = None
        self._fold: FittedFold | None = None

    @cached_property
    def known_users(self) -> frozenset[str]:
        """The users the champion (so the live publication, once published) has a personal list for."""
        return frozenset(self.champion.user_ids.astype(str).tolist())

    @property
    def event_log(self):
        if self._log is None:
            self._log = read_event_log(self.settings, self.catalog)
        return self._log

    def backtest_fold(self) -> FittedFold:
        """The newest fold of the configured split, with the models fitted on its training data."""
        if self._fold is None:
            folds, _ = make_folds(self.event_log, self.settings.model_copy(update={"backtest_folds": 1}))
            self._fold = self.fit(folds[0])
        return self._fold

    def fit(self, fold: Fold) -> FittedFold:
        """The champion's recipe and the generators fitted on the fold's training data."""
        started = time.perf_counter()
        name, params = self.champion.name, self.champion.params()
        final = recipe_factory(name, params)()
        refusal = final.refuses(fold.train)
        if refusal:
            raise DiagnoseError(f"the champion's recipe ({name}) cannot be refitted on {fold.name}: {refusal}")
        log.info("diagnose: fitting %s (the champion's recipe) on %s", name, fold.describe())
        final.fit(fold.train)
        if name == "ranker":
            generators = list(zip(final.generators, final.serving_generators, strict=True))
            fitted = FittedFold(
                fold,
                final,
                generators,
                note=f"the ranker reorders the union of each generator's top {final.candidates_per_generator}",
            )
        else:
            fitted = FittedFold(fold, final, [(name, final)])
            for other, factory in candidate_factories(self.settings, self._tuned()).items():
                if other == name:
                    continue
                if other == "ranker":
                    fitted.skipped[other] = "not refitted: two-stage and slow; its generators are the other candidates"
                    continue
                model = factory()
                reason = model.refuses(fold.train)
                if reason:
                    fitted.skipped[other] = f"refuses the data: {reason}"
                    continue
                log.info("diagnose: fitting candidate generator %s", other)
                fitted.generators.append((other, model.fit(fold.train)))
        log.info(
            "diagnose: %d model(s) fitted on %s in %.1fs",
            len(fitted.generators),
            fold.name,
            time.perf_counter() - started,
        )
        return fitted

    def _tuned(self) -> dict[str, dict] | None:
        if not self.settings.tune_enabled:
            return None
        from pipelines.training.tuned_params import read_tuned

        return {name: record.params for name, record in read_tuned(self.settings).items()}

    def diagnose(self, user_id: str) -> UserDiagnosis:
        """The diagnosis of one user (see the module docstring for the three cases)."""
        facts = {
            "registry version": f"{self.facts['registered_model']} v{self.facts['version']}",
            "champion": self.champion.name,
            "data snapshot": str(self.facts.get("data_snapshot")),
        }
        if user_id not in self.known_users:
            return self.fallback(user_id, facts)
        fitted = self.backtest_fold()
        fold, kind = fitted.fold, "held-out"
        position = np.flatnonzero(fold.eval_user_ids == user_id)
        if not len(position) or fold.train_rows[position[0]] < 0:
            n = self.settings.eval_leave_last_n
            log.info(
                "diagnose: %r has no held-out items in %s: holding out their last %d item(s)", user_id, fold.name, n
            )
            try:
                fold = user_last_n_fold(self.event_log, user_id, n, self.settings.eval_new_item_days)
            except ValueError as error:
                raise DiagnoseError(f"cannot diagnose {user_id!r}: {error}") from None
            fitted, kind = self.fit(fold), "recent"
        forbidden, names = catalog_status(fitted.final.item_ids, self.catalog)
        diagnosis = diagnose_user(
            fitted.final,
            fitted.generators,
            fold,
            user_id,
            self.rules,
            forbidden,
            names,
            self.k,
            self.depth,
            target_kind=kind,
            generator_note=fitted.note,
            sellers=seller_codes(fitted.final.item_ids, self.catalog),
        )
        diagnosis.skipped_generators = dict(fitted.skipped)
        split = (
            f"{self.settings.eval_split}: the backtest's newest fold"
            if kind == "held-out"
            else f"the user's own last {self.settings.eval_leave_last_n} item(s) held out"
        )
        diagnosis.facts = {**facts, "split": split, "fold": fold.name}
        return diagnosis

    def fallback(self, user_id: str, facts: dict[str, str]) -> UserDiagnosis:
        """An unknown user: the list they get is the publication's fallback, built as publication builds it."""
        allowed, categories = allowed_and_categories(self.champion.item_ids, self.catalog)
        top = fallback_list(self.champion, allowed, categories, self.rules).head(self.k)
        n_users = len(self.champion.user_ids)
        return UserDiagnosis(
            user_id=user_id,
            outcome=FALLBACK,
            explanation=(
                f"unknown user: not among the {n_users} users of the champion (v{self.facts['version']}); "
                "like every unknown user they get the popularity fallback, so there is no personal list to diagnose"
            ),
            k=self.k,
            depth=self.depth,
            model=self.champion.name,
            final=[
                ListEntry(int(r.rank), str(r.item_id), float(r.score), str(r.reason), False) for r in top.itertuples()
            ],
            facts=facts,
        )


def run_diagnosis(settings: Settings, user_id: str, k: int | None = None, depth: int = 100):
    """Diagnose one user, write the HTML page (and its JSON) and relink reports/index.html.

    Returns the diagnosis, the page's path and the index's path.
    """
    from pipelines.reports.diagnosis_report import write_diagnosis
    from pipelines.reports.index import write_index

    diagnosis = Diagnoser(settings, k, depth).diagnose(user_id)
    page = write_diagnosis(settings, diagnosis)
    return diagnosis, page, write_index(settings)
