"""Two-stage recommender: candidate generators propose, a LightGBM LambdaRank model orders.

Why two stages: each generator sees one kind of signal (co-occurrence, latent factors,
trend); a learnt ranker can weigh them per user and add what none of them sees (price fit,
category affinity, recency). Training the ranker needs labels from a period the generators
did not see, so ``fit`` splits the interactions it is given by time:

    history (before cutoff)  ->  generators fit here  ->  top-M candidates per user + features
    label window (last ``label_days``)  ->  label = 1 if the user interacted with the candidate

A label is an item the user first met in the label window (``Interactions.split_first_met``, where
the interactions carry ``first_ts``). An item met before the cutoff and again in the window straddles
it: it is history, as of its first touch, so the generators filter it as seen, as serving and the
evaluation do. Cut by last touch instead, such re-visits were labels the ranker was trained to put
first, a task it is never asked, and were missing from the history its generators fitted on.

The cutoff is ``max_ts - label_days``; with ``label_windows = n`` the same is repeated at n
successive cutoffs, one ``label_days`` apart, for more training groups. The evaluation's test
window is never among the data given to ``fit`` (the training pipeline passes train + valid only),
so labels come from the validation period at the latest.

At recommend time the generators are refit on *all* the given interactions (``refit_generators``)
so that candidates reflect the latest behaviour; the ranker only ever saw generator outputs as
features, and relies mostly on ranks and on statistics recomputed as of the new "now", which
transfer between the two fits. Keeping the pre-cutoff generators instead would ignore the
last ``label_days`` of every user — the most predictive days.

Items outside a user's candidate set are still ranked, below every candidate, by all-time
popularity, so a caller asking for more than the candidates (publication asks for top 150)
gets full lists rather than empty slots.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from models.base import SCORE_BLOCK, Recommender, algorithm
from models.dataset import Interactions
from models.ranker_features import (
    SECONDS_PER_DAY,
    FeatureContext,
    category_codes,
    category_indicator,
    category_taste,
)
from models.search import FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)

DEFAULT_GENERATORS = ("ease", "als", "itemknn_bm25", "popularity_recent")
MIN_EARLY_STOPPING_GROUPS = 50
# LambdaRank pairs beyond this position carry no gradient: matched to the NDCG@10 the ranker is judged by.
LAMBDARANK_TRUNCATION = 10
# A label window with fewer users who have both a history before it and interactions in it gives
# LambdaRank too few groups to learn anything but noise.
MIN_LABEL_USERS = 5


class RankerRecommender(Recommender):
    """LightGBM LambdaRank over the union of several generators' candidates.

    Parameters
    ----------
    label_days : length of the label window at the end of the given interactions, in days.
    label_windows : how many successive label windows to build training groups from.
    generators : registered names of the candidate generators.
    generator_params : optional per-generator hyper-parameters (name -> dict).
    candidates_per_generator : top-M taken from each generator (20: on the validation splits of ml-100k and
        the simulated log, 20 beat 50 and 10 on both taken together; a top-50 past the union is
        filled in all-time popularity order).
    n_estimators, learning_rate, num_leaves, min_child_samples : LightGBM settings.
    early_stopping_share : share of training users held out to pick the number of trees.
    max_train_users : cap on label users per window (a seeded sample above it), bounding fit time.
    refit_generators : refit generators on all data for recommending (see module docstring).
    """

    name = "ranker"
    # Declared in the registered MLflow model, which must load and rank on its own.
    pip_requirements = ["lightgbm"]

    def __init__(
        self,
        label_days: float = 7.0,
        label_windows: int = 1,
        generators: tuple[str, ...] | list[str] = DEFAULT_GENERATORS,
        generator_params: dict[str, dict] | None = None,
        candidates_per_generator: int = 20,
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        num_leaves: int = 7,
        min_child_samples: int = 100,
        early_stopping_share: float = 0.2,
        max_train_users: int = 20_000,
        refit_generators: bool = True,
        random_state: int = 0,
    ):
        super().__init__(random_state)
        if label_days <= 0 or label_windows < 1:
            raise ValueError(f"need label_days > 0 and label_windows >= 1, got {label_days} and {label_windows}")
        unknown = [g for g in generators if g == self.name or _known(g) is None]
        if unknown or not generators:
            raise ValueError(f"unknown candidate generator(s) {unknown or '(none given)'}")
        self.label_days, self.label_windows = label_days, label_windows
        self.generators = list(generators)
        self.generator_params = dict(generator_params or {})
        self.candidates_per_generator = candidates_per_generator
        self.n_estimators, self.learning_rate = n_estimators, learning_rate
        self.num_leaves, self.min_child_samples = num_leaves, min_child_samples
        self.early_stopping_share, self.max_train_users = early_stopping_share, max_train_users
        self.refit_generators = refit_generators
        self.window_generators: list[list[Recommender]] = []  # fitted at each cutoff; kept for inspection

    def params(self) -> dict:
        return {
            "label_days": self.label_days,
            "label_windows": self.label_windows,
            "generators": self.generators,
            "generator_params": self.generator_params,
            "candidates_per_generator": self.candidates_per_generator,
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "early_stopping_share": self.early_stopping_share,
            "max_train_users": self.max_train_users,
            "refit_generators": self.refit_generators,
            "random_state": self.random_state,
        }

    @classmethod
    def search_space(cls) -> SearchSpace:
        """The LightGBM ranker's capacity and step, and how deep it reads each generator's list (deeper lists
        let the taste features promote items of a user's minor categories; on MovieLens they mostly add
        noise: benchmarks/README.md); the generators keep their own (tuned) parameters."""
        return {
            "candidates_per_generator": IntRange(10, 80, log=True),
            "n_estimators": IntRange(50, 500, log=True),
            "learning_rate": FloatRange(0.01, 0.3, log=True),
            "num_leaves": IntRange(3, 63, log=True),
            "min_child_samples": IntRange(10, 500, log=True),
        }

    # --- fitting
    def refuses(self, interactions: Interactions) -> str | None:
        """The ranker needs ``label_windows`` label windows, each with a history before it and label users in it."""
        if interactions.last_ts is None:
            return (
                "the ranker needs interaction times (last_ts) to cut its label windows; these interactions carry none"
            )
        last_ts = interactions.require_time().tocsr()
        if not last_ts.nnz:
            return super().refuses(interactions)
        first, latest = float(last_ts.data.min()), float(last_ts.data.max())
        needed = self.label_windows * self.label_days
        span = (latest - first) / SECONDS_PER_DAY
        if span <= needed:
            return (
                f"the ranker needs more than {needed:g} days of interactions for {self.label_windows} label "
                f"window(s) of {self.label_days:g} days with a history before them; the data spans {span:.1f} days"
            )
        rows = np.repeat(np.arange(interactions.n_users), np.diff(last_ts.indptr))
        for window in range(self.label_windows):
            cutoff = latest - (window + 1) * self.label_days * SECONDS_PER_DAY
            end = cutoff + self.label_days * SECONDS_PER_DAY
            before = np.unique(rows[last_ts.data < cutoff])
            inside = np.unique(rows[(last_ts.data >= cutoff) & ((last_ts.data < end) if window else True)])
            users = len(np.intersect1d(before, inside, assume_unique=True))
            if users < MIN_LABEL_USERS:
                return (
                    f"label window {window + 1} of {self.label_windows} ({self.label_days:g} days) has {users} users "
                    f"with a history before it and interactions in it; the ranker needs at least {MIN_LABEL_USERS}"
                )
        for generator in self._make_generators():
            reason = generator.refuses(interactions)
            if reason:
                return f"its candidate generator {generator.name} refuses: {reason}"
        return super().refuses(interactions)

    def _make_generators(self) -> list[Recommender]:
        made = []
        for name in self.generators:
            params = dict(self.generator_params.get(name, {}))
            if name == "popularity_recent":
                params.setdefault("window_days", self.label_days)
            made.append(algorithm(name)(**params, random_state=self.random_state))
        return made

    def _fit(self, interactions: Interactions) -> None:
        import lightgbm as lgb

        started = time.perf_counter()
        self.item_category, _ = category_codes(interactions)
        frames, self.window_generators = [], []
        for window in range(self.label_windows):
            cutoff = interactions.max_ts - (window + 1) * self.label_days * SECONDS_PER_DAY
            # An earlier window ends where the later one's labels begin: window 2 must not see window 1.
            window_end = cutoff + self.label_days * SECONDS_PER_DAY
            upto = interactions.split_first_met(window_end)[0] if window else interactions
            frame, generators = self._training_groups(upto, cutoff, window)
            self.window_generators.append(generators)
            if frame is not None:
                frames.append(frame)
        if not frames:
            raise ValueError(
                f"no user in the last {self.label_days} day(s) x {self.label_windows} window(s) interacted with a "
                f"candidate item: nothing to learn from; lengthen label_days or add candidates"
            )
        train = pd.concat(frames, ignore_index=True)
        self.feature_names = [c for c in train.columns if c not in ("group", "user", "item", "label")]
        booster = self._train_booster(lgb, train)
        self.booster = booster
        log.info(
            "%s: %d groups, %d candidate rows (%.2f%% positive), %d trees in %.1fs",
            self.name,
            train["group"].nunique(),
            len(train),
            100 * train["label"].mean(),
            booster.num_trees(),
            time.perf_counter() - started,
        )
        if self.refit_generators:
            self.serving_generators = [g.fit(interactions) for g in self._make_generators()]
        else:
            self.serving_generators = self.window_generators[0]
        self.context = FeatureContext.as_of(interactions, self.label_days, self.item_category)
        self.fallback_order = np.argsort(np.argsort(-self.context.item_users, kind="stable"), kind="stable")

    def _training_groups(self, interactions: Interactions, cutoff: float, window: int):
        """Candidates with features and labels for one label window; the generators fitted before it."""
        history, labels = interactions.split_first_met(cutoff)
        if history.matrix.nnz == 0:
            raise ValueError(f"label window {window + 1} starts before the first interaction: nothing to fit on")
        generators = []
        for generator in self._make_generators():
            generators.append(generator.fit(history))
        label_users = np.flatnonzero((np.diff(labels.matrix.indptr) > 0) & (np.diff(history.matrix.indptr) > 0))
        if len(label_users) > self.max_train_users:
            rng = np.random.default_rng(self.random_state + window)
            label_users = np.sort(rng.choice(label_users, self.max_train_users, replace=False))
        log.info(
            "%s: window %d: history of %d interactions, %d label users, generators fitted",
            self.name,
            window + 1,
            history.matrix.nnz,
            len(label_users),
        )
        if not len(label_users):
            return None, generators
        context = FeatureContext.as_of(history, self.label_days, self.item_category)
        frame = self._candidate_frame(generators, context, label_users)
        truth = labels.matrix[frame["user"].to_numpy(), frame["item"].to_numpy()]
        frame["label"] = (np.asarray(truth).ravel() > 0).astype(np.int32)
        positives = frame.groupby("user")["label"].transform("max") > 0
        frame = frame[positives].copy()  # a group without a positive carries no ranking gradient
        frame["group"] = window * interactions.n_users + frame["user"]
        return (frame if len(frame) else None), generators

    def _candidate_frame(self, generators: list[Recommender], context: FeatureContext, users: np.ndarray):
        """One row per (user, candidate item): generator scores and ranks plus context features."""
        depth = self.candidates_per_generator
        per_generator = []
        for position, generator in enumerate(generators):
            items, scores = generator.recommend(users, depth)
            rows, ranks = np.nonzero(items >= 0)
            per_generator.append(
                pd.DataFrame(
                    {
                        "user": users[rows],
                        "item": items[rows, ranks],
                        f"g{position}_score": scores[rows, ranks],
                        f"g{position}_rank": ranks + 1.0,
                    }
                )
            )
        frame = per_generator[0]
        for other in per_generator[1:]:
            frame = frame.merge(other, on=["user", "item"], how="outer")
        frame = frame.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
        rank_columns = [c for c in frame.columns if c.endswith("_rank")]
        frame["n_generators"] = frame[rank_columns].notna().sum(axis=1).astype(np.float64)
        frame[rank_columns] = frame[rank_columns].fillna(depth + 1.0)
        add_user_relative_scores(frame)
        if context.user_category_visits is not None and context.item_category is not None:
            add_taste_factored_scores(frame, generators, context, users)
        frame["best_rank"] = frame[rank_columns].min(axis=1)
        user_index, item_index = frame["user"].to_numpy(), frame["item"].to_numpy()
        for name, values in context.pair_features(user_index, item_index).items():
            frame[name] = values
        return frame

    def _train_booster(self, lgb, train: pd.DataFrame):
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": 0.8,
            "lambdarank_truncation_level": LAMBDARANK_TRUNCATION,
            "num_threads": 2,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        groups = train["group"].unique()
        rng = np.random.default_rng(self.random_state)
        n_valid = int(len(groups) * self.early_stopping_share)
        if n_valid < MIN_EARLY_STOPPING_GROUPS:
            n_valid = 0  # NDCG over a handful of users is noise: early stopping would stop at random
        valid_groups = set(rng.choice(groups, n_valid, replace=False)) if n_valid else set()
        is_valid = train["group"].isin(valid_groups).to_numpy()

        def dataset(part: pd.DataFrame, reference=None):
            sizes = part.groupby("group", sort=False).size().to_numpy()
            return lgb.Dataset(
                part[self.feature_names], part["label"], group=sizes, reference=reference, free_raw_data=False
            )

        fit_set = dataset(train[~is_valid])
        valid_sets, callbacks = [fit_set], [_progress(self.name)]
        if n_valid:
            valid_sets = [dataset(train[is_valid], fit_set)]
            callbacks.append(lgb.early_stopping(stopping_rounds=30, verbose=False))
        booster = lgb.train(params, fit_set, self.n_estimators, valid_sets=valid_sets, callbacks=callbacks)
        if n_valid and booster.best_iteration:
            # Keep exactly the trees early stopping chose, so a saved model predicts the same.
            booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
        return booster

    # --- inference
    def _score(self, user_index: np.ndarray) -> np.ndarray:
        user_index = np.asarray(user_index)
        dense = np.empty((len(user_index), len(self.item_ids)), dtype=np.float32)
        frame = self._candidate_frame(self.serving_generators, self.context, user_index)
        predicted = self.booster.predict(frame[self.feature_names], num_threads=2)
        floor = float(predicted.min(initial=0.0)) - 1.0
        # Non-candidates: below every candidate, in all-time popularity order.
        dense[:] = floor - self.fallback_order / len(self.item_ids)
        position = pd.Index(user_index).get_indexer(frame["user"].to_numpy())
        dense[position, frame["item"].to_numpy()] = predicted
        return dense

    @property
    def item_embeddings(self) -> np.ndarray | None:
        """The first generator's embeddings that has any: the ranker itself learns none."""
        for generator in getattr(self, "serving_generators", []):
            if generator.item_embeddings is not None:
                return generator.item_embeddings
        return None

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature, for the evaluation report."""
        gains = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.feature_names, gains.tolist(), strict=True), key=lambda kv: -kv[1]))

    # --- forgetting: the context's user_* features are per user, and so is every generator's state
    def forget_users(self, user_ids) -> int:
        user_ids = list(user_ids)
        for generator in getattr(self, "serving_generators", []):
            generator.forget_users(user_ids)
        return super().forget_users(user_ids)

    def _forget_user_rows(self, keep: np.ndarray) -> None:
        for name in vars(self.context):
            value = getattr(self.context, name)
            if name.startswith("user_") and value is not None:
                setattr(self.context, name, value[keep])

    # --- persistence
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = self.context.to_arrays("context_")
        arrays["feature_names"] = np.asarray(self.feature_names, dtype=str)
        arrays["fallback_order"] = self.fallback_order
        if self.item_category is not None:
            arrays["item_category"] = self.item_category
        return arrays

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.context = FeatureContext.from_arrays(arrays, "context_")
        self.feature_names = arrays["feature_names"].tolist()
        self.fallback_order = arrays["fallback_order"]
        self.item_category = arrays.get("item_category")

    def _save_files(self, directory) -> None:
        (directory / "ranker.lgb.txt").write_text(self.booster.model_to_string())
        for position, generator in enumerate(self.serving_generators):
            generator.save(directory / "generators" / f"{position}_{generator.name}")

    def _load_files(self, directory) -> None:
        import lightgbm as lgb

        self.booster = lgb.Booster(model_str=(directory / "ranker.lgb.txt").read_text())
        self.serving_generators = [
            Recommender.load(directory / "generators" / f"{position}_{name}")
            for position, name in enumerate(self.generators)
        ]


def _known(name: str):
    try:
        return algorithm(name)
    except ValueError:
        return None


def _progress(model_name: str, every: int = 50):
    """A LightGBM callback that logs the validation NDCG every ``every`` trees."""

    def callback(env) -> None:
        done = env.iteration + 1
        if done % every == 0 or done == env.end_iteration:
            scores = ", ".join(f"{data} {metric} {value:.4f}" for data, metric, value, *_ in env.evaluation_result_list)
            log.info("%s: tree %d/%d %s", model_name, done, env.end_iteration, scores)

    return callback


def add_user_relative_scores(frame: pd.DataFrame) -> None:
    """Each generator's score relative to the same user's other candidates, in place.

    Raw scores are not comparable across users (EASE's scale grows with the user's history, ALS's
    with the user's factor norm), so one split threshold on ``g0_score`` means a different thing for
    each user. The gap to the user's best candidate and the z-score within the user are on one scale
    for everyone. Missing scores (the generator did not propose the item) stay NaN.
    """
    by_user = frame.groupby("user", sort=False)
    for column in [c for c in frame.columns if c.endswith("_score")]:
        scores = frame[column]
        best = by_user[column].transform("max")
        mean = by_user[column].transform("mean")
        spread = by_user[column].transform("std")
        frame[f"{column}_gap"] = scores - best
        with np.errstate(invalid="ignore", divide="ignore"):
            frame[f"{column}_z"] = (scores - mean) / spread.where(spread > 0)


def add_taste_factored_scores(
    frame: pd.DataFrame, generators: list[Recommender], context: FeatureContext, users: np.ndarray
) -> None:
    """Each generator's score factored as P(category | user) x P(item | user, category), in place.

    A generator's score mixes two questions: which category the user turns to next, and which item
    within it. The second is the item's share of the generator's positive scores over its whole
    category for this user (``g<k>_category_share``: every item of the category, not only the
    candidates, whose top is crowded by the user's main category); the first is the user's share of
    category visits (``user_category_taste``, ``ranker_features.category_taste``); their product is
    ``g<k>_taste_share``. On recforge's simulated log, whose sessions pick a category by the user's
    taste and then an item within it, this product alone beats EASE (benchmarks/README.md).
    Needs full score rows: each generator scores the frame's users again, in blocks.
    """
    codes = context.item_category
    n_categories = context.user_category_visits.shape[1]
    to_category = category_indicator(codes, n_categories)
    users = np.asarray(users)
    row_user = pd.Index(users).get_indexer(frame["user"].to_numpy())
    item_category = codes[frame["item"].to_numpy()]
    has_category = item_category >= 0
    at = (row_user[has_category], item_category[has_category])
    taste = np.full(len(frame), np.nan)
    taste[has_category] = category_taste(context.user_category_visits, users)[at]
    frame["user_category_taste"] = taste
    block = max(1, SCORE_BLOCK // max(len(codes), 1))
    for position, generator in enumerate(generators):
        mass = np.empty((len(users), n_categories), dtype=np.float64)
        for start in range(0, len(users), block):
            scores = np.maximum(generator._score(users[start : start + block]), 0.0)
            mass[start : start + block] = np.asarray(to_category.T @ scores.T).T
        positive = np.maximum(frame[f"g{position}_score"].to_numpy(dtype=np.float64), 0.0)  # NaN: not proposed
        share = np.full(len(frame), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            share[has_category] = positive[has_category] / mass[at]
        share[~np.isfinite(share)] = np.nan
        frame[f"g{position}_category_share"] = share
        frame[f"g{position}_taste_share"] = taste * share
