"""Bayesian Personalised Ranking (Rendle et al. 2009): `implicit`'s SGD, or Adam in torch (`models/bpr_adam.py`).

BPR optimises the order of a seen item over a sampled unseen one, which is what a top-k
list is judged on; ALS fits the confidence-weighted matrix instead. Weights are ignored
(every interaction is a positive), as ``implicit``'s BPR does.
"""

from __future__ import annotations

import logging

import numpy as np

from models.dataset import Interactions
from models.early_stopping import EpochSearch, validation_window
from models.factorization import EpochLogger, FactorizationRecommender
from models.search import FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)


# Per optimizer: (learning_rate, regularization) when not given. Adam's were chosen on ml-100k's
# stratified validation split (cut from training), benchmarks/README.md.
OPTIMIZER_DEFAULTS = {"sgd": (0.01, 0.01), "adam": (1e-3, 1e-3)}


class BPRRecommender(FactorizationRecommender):
    """Matrix factorisation trained with the BPR pairwise loss by SGD, early-stopped on a validation window.

    Defaults come from ml-100k (stratified random 75/25 split, benchmarks/README.md): a small step
    and L2 penalty learn steadily, and the epoch count is chosen on the validation window
    (``models/early_stopping.py``) because BPR overfits after a data-dependent number of epochs
    (a fixed 100 epochs at step 0.05 scored NDCG@10 0.19 there; early-stopped, 0.36).

    Parameters
    ----------
    factors : latent dimensions (one more carries the item bias).
    optimizer : "sgd", ``implicit``'s SGD with one negative per positive (the default); or "adam", torch's
        Adam with ``negatives`` negatives per positive (``models/bpr_adam.py``): NDCG@10 0.42 against
        0.36-0.37 on ml-100k's stratified protocol, at 10-25 times the fit time; on the demo log's time
        folds it scored lower (0.141 vs 0.154), hence not the default.
    learning_rate : the step (default 0.01 for SGD, 1e-3 for Adam).
    regularization : L2 penalty on the factors (default 0.01 for SGD, 1e-3 for Adam).
    negatives : sampled negatives per positive (Adam only).
    num_threads : torch threads while fitting with Adam (restored afterwards).
    iterations : the most passes over the interactions (all of them without early stopping).
    early_stopping : choose the epoch count on a validation window cut from the given interactions.
    validation_share : share of the interaction cells (the latest by time, if known) in that window.
    eval_every, patience : score the window every ``eval_every`` epochs; stop after ``patience``
        scores without a gain.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float | None = None,
        regularization: float | None = None,
        iterations: int = 300,
        early_stopping: bool = True,
        validation_share: float = 0.1,
        eval_every: int = 10,
        patience: int = 3,
        optimizer: str = "sgd",
        negatives: int = 8,
        num_threads: int = 1,
        random_state: int = 0,
    ):
        super().__init__(random_state)
        if eval_every < 1 or patience < 1:
            raise ValueError(f"eval_every and patience must be >= 1, got {eval_every} and {patience}")
        if optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_DEFAULTS)}, got {optimizer!r}")
        if negatives < 1 or num_threads < 1:
            raise ValueError(f"negatives and num_threads must be >= 1, got {negatives} and {num_threads}")
        default_step, default_penalty = OPTIMIZER_DEFAULTS[optimizer]
        self.optimizer, self.negatives, self.num_threads = optimizer, negatives, num_threads
        self.factors = factors
        self.learning_rate = default_step if learning_rate is None else learning_rate
        self.regularization = default_penalty if regularization is None else regularization
        self.iterations = iterations
        self.early_stopping, self.validation_share = early_stopping, validation_share
        self.eval_every, self.patience = eval_every, patience
        self.epoch_search: EpochSearch | None = None  # the validation curve of the last fit, if early-stopped
        self.validation_cutoff_ts: float | None = None  # where that window began (epoch seconds), if cut by time

    def params(self) -> dict:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "early_stopping": self.early_stopping,
            "validation_share": self.validation_share,
            "eval_every": self.eval_every,
            "patience": self.patience,
            "optimizer": self.optimizer,
            "negatives": self.negatives,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
        }

    @classmethod
    def search_space(cls) -> SearchSpace:
        """SGD is sensitive to its step and penalty by orders of magnitude, hence log scales."""
        return {
            "factors": IntRange(8, 256, log=True),
            "learning_rate": FloatRange(1e-3, 0.3, log=True),
            "regularization": FloatRange(1e-4, 0.1, log=True),
            "iterations": IntRange(20, 400, log=True),
        }

    def _trainer(self, iterations: int):
        """A trainer of `iterations` epochs whose ``fit`` continues from its current factors."""
        if self.optimizer == "adam":
            from models.bpr_adam import AdamBPR

            return AdamBPR(
                self.factors, self.learning_rate, self.regularization, iterations, self.negatives,
                self.random_state, self.num_threads,
            )  # fmt: skip
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # One thread: implicit's multi-threaded SGD updates race (Hogwild), so two runs with the
        # same seed would differ. The data sets it is meant for fit in seconds on one core.
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=iterations,
            random_state=self.random_state,
            num_threads=1,
        )

    def _best_epochs(self, interactions: Interactions) -> int:
        """Epochs that score best on the validation window (``iterations`` if there is none to speak of)."""
        self.epoch_search, self.validation_cutoff_ts = None, None
        if not self.early_stopping:
            return self.iterations
        window = validation_window(interactions, self.validation_share, self.random_state)
        if window is None:
            log.info("%s: validation window too small for early stopping; %d epochs", self.name, self.iterations)
            return self.iterations
        search = EpochSearch(self.eval_every, self.patience, self.iterations)
        step = self._trainer(self.eval_every)
        done = 0
        while True:
            step.fit(window.history.matrix, show_progress=False)  # both trainers continue from their current factors
            done += self.eval_every
            score = window.ndcg(lambda users: step.user_factors[users] @ step.item_factors.T)
            log.info("%s: epoch %d validation ndcg@10 %.4f", self.name, done, score)
            if search.record(done, score):
                break
        self.epoch_search, self.validation_cutoff_ts = search, window.cutoff_ts
        log.info(
            "%s: early stopping chose %d epochs (validation ndcg@10 %.4f)",
            self.name,
            search.best_epochs,
            dict(search.curve)[search.best_epochs],
        )
        return search.best_epochs

    def _fit_factors(self, interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
        epochs = self._best_epochs(interactions)
        model = self._trainer(epochs)
        model.fit(interactions.matrix, show_progress=False, callback=EpochLogger(self.name, epochs, every=20))
        return model.user_factors, model.item_factors
