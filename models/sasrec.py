"""SASRec (Kang and McAuley 2018): a causal transformer over each user's item sequence.

The other models see a user as a bag of items; SASRec sees the order, so it can learn "after
A comes B" patterns (series, accessories, a user's current mood) that a bag cannot express.
Sequences are each user's items ordered by their last interaction time (``last_ts``; ties by
item index), so the model needs time-aware Interactions.

Training follows the "SASRec with cross-entropy" recipe (Klenitskiy and Vasilev 2023), which
clearly beats the original one-negative BCE: at every position, softmax over the whole catalog
(or over ``n_negatives`` uniformly sampled items for catalogs too big for that). Long histories
are cut into several windows of ``max_len`` so no interaction is wasted. It is sized for CPUs:
one block of width 64 on one thread, early-stopped, fits the demo log in 3-6 s (benchmarks/README.md).

The score of an item for a user is the last position's hidden state · the item's embedding
(input and output embeddings are shared), which also makes the item embeddings meaningful for
similar-item search. Users without history get all-time popularity.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from models.base import Recommender
from models.dataset import Interactions
from models.early_stopping import EpochSearch, ValidationWindow, validation_window
from models.popularity import distinct_users_per_item
from models.search import Choice, FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)

# Below this many users with two or more items, a transformer over sequences has nothing to learn from.
MIN_SEQUENCE_USERS = 10
# With n_negatives="auto": the full-catalog softmax up to this many items (the demo, ml-100k), above
# it a sampled one. At 20,000 items the full softmax's logits (batch x max_len x items) made an epoch
# of a 100k-user fold take many minutes on one thread; 256 sampled negatives took 50 s.
FULL_SOFTMAX_MAX_ITEMS = 4_096
AUTO_NEGATIVES = 256


class SASRecRecommender(Recommender):
    """Self-attentive sequential recommender.

    Parameters
    ----------
    max_len : items of history the model attends to.
    embedding_dim, n_blocks, n_heads : transformer size. One block at step 3e-3: on the demo log it
        scored as two blocks at 1e-3 (NDCG@10 0.143 vs 0.146 over 3 folds) in under half the time
        (10 s a fit vs 24 s), which is what lets SASRec be a default candidate within the demo's time.
    dropout : on embeddings and inside the blocks.
    epochs, batch_size, learning_rate, weight_decay : Adam training (``epochs`` is the most).
    n_negatives : 0 for the full-catalog softmax, else sampled softmax with this many negatives;
        "auto" is the full softmax up to ``FULL_SOFTMAX_MAX_ITEMS`` items, else ``AUTO_NEGATIVES``.
        Negatives are drawn in proportion to how often each item is a training target, and every
        logit of the sampled softmax is corrected by the log of its item's sampling probability
        (`sampled_softmax_logits`), so the sampled loss estimates the full softmax's. Uniform
        negatives without it almost never show the model a popular item as a wrong answer: on
        ml-latest-small (9.7k items, stratified split) NDCG@10 0.088 uniform vs 0.186 corrected,
        against 0.150 for the full softmax; simulated, 6,000 items, time split: 0.074 vs 0.082
        (benchmarks/README.md, "Beside a peer library").
    max_windows : an epoch trains on at most this many training windows, a fresh seeded sample of
        them each epoch when there are more. An epoch's cost then stops growing with the user base:
        on one CPU thread an epoch over every window of a 100k-user fold (87k sequences) took 50 s,
        so 30 early-stopped epochs per fit did not fit a training's time; a sample still shows the
        model every item transition that is common, and it scores every user from their own history.
    num_threads : torch intra-op threads while fitting (restored afterwards); on a machine shared
        with other work, 1 avoids threads waiting for each other at every operation (measured on
        the demo log with two other jobs running: 1.6 s an epoch on one thread, 21 s on two).
    early_stopping : train on the interactions before a validation window (the latest
        ``validation_share`` of them by time, ``models/early_stopping.py``), score the window after
        every epoch and keep the weights of the best epoch, stopping after ``patience`` epochs
        without a gain. The best weights are kept rather than refitted on everything, which would
        double the cost; the window's items still reach the model, as the input sequence it reads
        at recommend time.
    """

    name = "sasrec"
    # Declared in the registered MLflow model; the exact version the CPU wheel on disk provides.
    pip_requirements = ["torch==2.13.0"]

    def __init__(
        self,
        max_len: int = 50,
        embedding_dim: int = 64,
        n_blocks: int = 1,
        n_heads: int = 2,
        dropout: float = 0.2,
        epochs: int = 30,
        batch_size: int = 128,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        n_negatives: int | str = "auto",
        max_windows: int = 20_000,
        num_threads: int = 1,
        early_stopping: bool = True,
        validation_share: float = 0.1,
        patience: int = 3,
        random_state: int = 0,
    ):
        super().__init__(random_state)
        if embedding_dim % n_heads:
            raise ValueError(f"embedding_dim {embedding_dim} must be divisible by n_heads {n_heads}")
        if n_negatives != "auto" and not (isinstance(n_negatives, int) and n_negatives >= 0):
            raise ValueError(f'n_negatives must be "auto" or an integer >= 0, got {n_negatives!r}')
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        self.max_len, self.embedding_dim, self.n_blocks, self.n_heads = max_len, embedding_dim, n_blocks, n_heads
        self.dropout, self.epochs, self.batch_size = dropout, epochs, batch_size
        self.learning_rate, self.weight_decay, self.n_negatives = learning_rate, weight_decay, n_negatives
        self.max_windows = max_windows
        self.num_threads = num_threads
        self.early_stopping, self.validation_share, self.patience = early_stopping, validation_share, patience
        self.epoch_search: EpochSearch | None = None  # the validation curve of the last fit, if early-stopped
        self.validation_cutoff_ts: float | None = None

    def params(self) -> dict:
        return {
            "max_len": self.max_len,
            "embedding_dim": self.embedding_dim,
            "n_blocks": self.n_blocks,
            "n_heads": self.n_heads,
            "dropout": self.dropout,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "n_negatives": self.n_negatives,
            "max_windows": self.max_windows,
            "num_threads": self.num_threads,
            "early_stopping": self.early_stopping,
            "validation_share": self.validation_share,
            "patience": self.patience,
            "random_state": self.random_state,
        }

    @classmethod
    def search_space(cls) -> SearchSpace:
        """Width, regularisation and the Adam step; sizes are choices divisible by the default head count."""
        return {
            "embedding_dim": Choice((32, 64, 128)),
            "dropout": FloatRange(0.0, 0.5),
            "learning_rate": FloatRange(1e-4, 1e-2, log=True),
            "epochs": IntRange(5, 60, log=True),
        }

    def negatives_for(self, n_items: int) -> int:
        """Sampled negatives per position for a catalog of ``n_items`` (0: the full softmax)."""
        if self.n_negatives == "auto":
            return 0 if n_items <= FULL_SOFTMAX_MAX_ITEMS else AUTO_NEGATIVES
        return self.n_negatives

    # --- data
    def _sequences(self, interactions: Interactions) -> list[np.ndarray]:
        """Each user's item indices, oldest first."""
        last_ts = interactions.require_time().tocsr()
        last_ts.sort_indices()
        sequences = []
        for user in range(interactions.n_users):
            start, end = last_ts.indptr[user], last_ts.indptr[user + 1]
            items, times = last_ts.indices[start:end], last_ts.data[start:end]
            sequences.append(items[np.lexsort((items, times))])
        return sequences

    def _windows(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Training windows of max_len + 1 items (left-padded with -1), newest window of each user first."""
        windows = []
        for sequence in sequences:
            for end in range(len(sequence), 1, -self.max_len):
                chunk = sequence[max(0, end - self.max_len - 1) : end]
                row = np.full(self.max_len + 1, -1, dtype=np.int64)
                row[-len(chunk) :] = chunk
                windows.append(row)
        return np.asarray(windows, dtype=np.int64).reshape(-1, self.max_len + 1)

    def _last_items(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Each user's latest max_len items, left-padded with -1: the model input at recommend time."""
        recent = np.full((len(sequences), self.max_len), -1, dtype=np.int64)
        for user, sequence in enumerate(sequences):
            if len(sequence):
                tail = sequence[-self.max_len :]
                recent[user, -len(tail) :] = tail
        return recent

    # --- fitting
    def refuses(self, interactions: Interactions) -> str | None:
        """SASRec learns from order: it needs interaction times and users with a sequence (two items or more)."""
        if interactions.last_ts is None:
            return "SASRec needs interaction times (last_ts) to order each user's items; these interactions carry none"
        with_sequence = int((np.diff(interactions.matrix.indptr) >= 2).sum())
        if with_sequence < MIN_SEQUENCE_USERS:
            return (
                f"SASRec needs at least {MIN_SEQUENCE_USERS} users with a sequence of two or more items; "
                f"{with_sequence} of {interactions.n_users} users have one"
            )
        return super().refuses(interactions)

    per_user_state = ("recent",)  # each user's last items

    def _fit(self, interactions: Interactions) -> None:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            torch.manual_seed(self.random_state)
            sequences = self._sequences(interactions)
            self.recent = self._last_items(sequences)
            self.popularity = distinct_users_per_item(interactions.matrix)
            self.net = _network(interactions.n_items, self.params())
            self.epoch_search, self.validation_cutoff_ts = None, None
            window = None
            if self.early_stopping:
                window = validation_window(interactions, self.validation_share, self.random_state)
                if window is None:
                    log.info("%s: validation window too small for early stopping; %d epochs", self.name, self.epochs)
            if window is not None:
                windows = self._windows(self._sequences(window.history))
                self.validation_cutoff_ts = window.cutoff_ts
            else:
                windows = self._windows(sequences)
            if not len(windows):
                raise ValueError("SASRec needs at least one user with two or more interactions")
            self._train(torch, torch.from_numpy(windows + 1), window)  # +1: index 0 is padding
        finally:
            torch.set_num_threads(previous_threads)

    def _train(self, torch, windows, validation: ValidationWindow | None = None) -> None:
        search = EpochSearch(1, self.patience, self.epochs) if validation is not None else None
        if validation is not None:
            history_input = self._last_items(self._sequences(validation.history))
        best_state = None
        generator = torch.Generator().manual_seed(self.random_state)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        n_items = self.net.items.num_embeddings - 1
        n_negatives = self.negatives_for(n_items)
        sampled = 0 < n_negatives < n_items
        if sampled:
            sampling, log_sampling = target_frequencies(windows, n_items)
        self.net.train()
        for epoch in range(self.epochs):
            started, total, count = time.perf_counter(), 0.0, 0
            epoch_windows = torch.randperm(len(windows), generator=generator)[: self.max_windows]
            for batch in windows[epoch_windows].split(self.batch_size):
                inputs, targets = batch[:, :-1], batch[:, 1:]
                hidden = self.net(inputs)
                real = (targets > 0) & (inputs > 0)
                hidden, targets = hidden[real], targets[real]
                catalog = self.net.items.weight
                if sampled:
                    negatives = torch.multinomial(sampling, n_negatives, replacement=True, generator=generator) + 1
                    logits = sampled_softmax_logits(hidden, catalog, targets, negatives, log_sampling)
                    labels = torch.zeros_like(targets)
                else:
                    logits, labels = hidden @ catalog[1:].T, targets - 1
                loss = torch.nn.functional.cross_entropy(logits, labels)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, count = total + loss.item() * len(targets), count + len(targets)
            log.info(
                "%s: epoch %d/%d loss %.4f, %.1fs",
                self.name,
                epoch + 1,
                self.epochs,
                total / max(count, 1),
                time.perf_counter() - started,
            )
            if search is not None:
                self.net.eval()
                score = validation.ndcg(lambda users: self._scores_of(history_input[users]))
                self.net.train()
                stop = search.record(epoch + 1, score)
                if search.best_epochs == epoch + 1:
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                log.info("%s: epoch %d validation ndcg@10 %.4f", self.name, epoch + 1, score)
                if stop:
                    break
        if search is not None:
            self.net.load_state_dict(best_state)
            self.epoch_search = search
            log.info("%s: early stopping kept epoch %d of %d", self.name, search.best_epochs, search.curve[-1][0])
        self.net.eval()

    # --- inference
    def _score(self, user_index: np.ndarray) -> np.ndarray:
        return self._scores_of(self.recent[user_index])

    def _scores_of(self, recent_items: np.ndarray) -> np.ndarray:
        """Scores of every item after these input sequences (item indices, left-padded with -1)."""
        import torch

        recent = torch.from_numpy(recent_items + 1)
        with torch.no_grad():
            hidden = self.net(recent)[:, -1]
            scores = (hidden @ self.net.items.weight[1:].T).numpy()
        no_history = (recent > 0).sum(dim=1).numpy() == 0
        scores[no_history] = self.popularity
        return scores

    @property
    def item_embeddings(self) -> np.ndarray:
        return self.net.items.weight[1:].detach().numpy().copy()

    # --- persistence: arrays in the npz, weights as a torch state_dict (loaded with weights_only)
    def _arrays(self) -> dict[str, np.ndarray]:
        return {"recent": self.recent, "popularity": self.popularity}

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.recent, self.popularity = arrays["recent"], arrays["popularity"]

    def _save_files(self, directory) -> None:
        import torch

        torch.save(self.net.state_dict(), directory / "sasrec.pt")

    def _load_files(self, directory) -> None:
        import torch

        self.net = _network(len(self.item_ids), self.params())
        self.net.load_state_dict(torch.load(directory / "sasrec.pt", weights_only=True))
        self.net.eval()


def target_frequencies(windows, n_items: int):
    """(sampling probability of each item, its log) for negatives: how often the item is a training
    target (index 0 is padding), plus one so that an item no window ends on can still be drawn."""
    import torch

    targets = windows[:, 1:]
    counts = torch.bincount(targets[targets > 0], minlength=n_items + 1)[1:].double() + 1.0
    probability = (counts / counts.sum()).float()
    return probability, torch.log(probability)


def sampled_softmax_logits(hidden, catalog, targets, negatives, log_sampling):
    """Logits of each position's target (column 0) and the shared sampled negatives (item indices, 1-based),
    each minus the log of its item's sampling probability (the sampled softmax's correction, which makes
    its loss estimate the full softmax's); a negative that is the position's own target is masked out."""
    import torch

    positive = (hidden * catalog[targets]).sum(-1, keepdim=True) - log_sampling[targets - 1][:, None]
    negative = hidden @ catalog[negatives].T - log_sampling[negatives - 1][None, :]
    negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    return torch.cat([positive, negative], 1)


def _network(n_items: int, params: dict):
    """The transformer, built here so torch is imported only by those who train or load SASRec."""
    import torch
    from torch import nn

    class SASRecNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            dim = params["embedding_dim"]
            self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
            self.positions = nn.Embedding(params["max_len"], dim)
            self.dropout = nn.Dropout(params["dropout"])
            layer = nn.TransformerEncoderLayer(
                dim,
                params["n_heads"],
                dim_feedforward=2 * dim,
                dropout=params["dropout"],
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.blocks = nn.TransformerEncoder(layer, params["n_blocks"], enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.scale = math.sqrt(dim)
            self.heads = params["n_heads"]
            # Small embeddings: they are also the output layer, and N(0, 1) rows against a
            # layer-normed state of norm sqrt(dim) start the softmax far from uniform.
            nn.init.normal_(self.items.weight, std=1.0 / dim)
            nn.init.normal_(self.positions.weight, std=1.0 / dim)

        def forward(self, sequence):
            length = sequence.shape[1]
            padding = sequence == 0
            # Causal, and padding keys hidden; each position may always see itself so that no
            # row of the attention is fully masked (which would give NaN for padded positions).
            blocked = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)[None] | padding[:, None, :]
            blocked[:, torch.arange(length), torch.arange(length)] = False
            mask = blocked.repeat_interleave(self.heads, dim=0)
            hidden = self.items(sequence) * self.scale + self.positions(torch.arange(length))[None]
            hidden = self.dropout(hidden) * (~padding)[..., None]
            return self.norm(self.blocks(hidden, mask=mask))

    return SASRecNetwork()
