"""Item cold start through content (models/content.py): text to vectors, vectors to collaborative factors.

The data: tests/models/test_contract.py's two communities, whose items' titles say which community
they belong to ("red lamp" / "blue kettle"), plus catalog items nobody has touched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import ALSRecommender, ContentALSRecommender, Recommender
from models.content import ContentEncoder, NoContentError, ridge_map, sentence_model_available
from models.dataset import Interactions
from models.evaluation import EventLog, global_time_folds
from models.evaluation.evaluate import EvaluationConfig, score_fold
from models.lists.ranked import ListRules
from models.lists.stored import build_lists
from pipelines.publication.item_index import build_index, index_spec
from pipelines.settings import Settings
from tests.models.test_contract import COMMUNITY_SIZE, N_USERS, T0, catalog, community_walks

COLD_LAMP, COLD_KETTLE = "i90", "i91"


def catalog_with_cold_items() -> pd.DataFrame:
    """The community catalog plus one untouched item of each community, known only by its text."""
    cold = pd.DataFrame(
        {
            "item_id": [COLD_LAMP, COLD_KETTLE],
            "title": ["red lamp 90", "blue kettle 91"],
            "category": ["c0", "c1"],
            "price": [10.0, 40.0],
        }
    )
    return pd.concat([catalog(), cold], ignore_index=True)


def hybrid() -> ContentALSRecommender:
    return ContentALSRecommender(factors=4, iterations=15, regularization=1.0, alpha=1.0, encoder="tfidf")


@pytest.fixture(scope="module")
def fitted() -> ContentALSRecommender:
    data = Interactions.from_frame(community_walks(), item_features=catalog(), catalog=catalog_with_cold_items())
    return hybrid().fit(data)


def test_the_encoder_is_deterministic():
    items = catalog_with_cold_items()
    first = ContentEncoder(encoder="tfidf").fit_transform(items)
    second = ContentEncoder(encoder="tfidf").fit_transform(items.copy())
    assert (first != second).nnz == 0
    encoder = ContentEncoder(encoder="tfidf")
    encoder.fit_transform(items)
    assert (encoder.transform(items) != first).nnz == 0  # a later batch is encoded with the same vocabulary
    assert np.allclose(np.asarray(first.multiply(first).sum(axis=1)).ravel(), 1.0)


def test_the_encoder_drops_tokens_of_a_single_item_and_tags_structured_values():
    encoder = ContentEncoder(encoder="tfidf")
    encoder.fit_transform(catalog_with_cold_items())
    assert {"red", "lamp", "category=c0", "category=c1"} <= set(encoder.vocabulary)
    assert "90" not in encoder.vocabulary  # an item's own number would let the map memorise it


def test_the_ridge_map_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    content, truth = rng.normal(size=(50, 6)), rng.normal(size=(6, 3))
    import scipy.sparse as sp

    learnt = ridge_map(sp.csr_matrix(content), content @ truth, 1e-6)
    assert np.allclose(learnt, truth, atol=1e-4)


def test_cold_items_are_appended_after_the_training_items(fitted):
    assert list(fitted.item_ids[-2:]) == [COLD_LAMP, COLD_KETTLE]
    assert fitted.n_cold_items == 2
    assert fitted.seen.shape == (N_USERS, 2 * COMMUNITY_SIZE + 2)
    assert fitted.item_factors.shape[0] == len(fitted.item_ids)


def test_a_cold_item_lands_beside_the_warm_items_with_the_same_content(fitted):
    index = pd.Index(fitted.item_ids)
    for cold, community in ((COLD_LAMP, 0), (COLD_KETTLE, 1)):
        neighbours, _ = fitted.similar_items(index.get_indexer([cold]), 5)
        numbers = np.array([int(fitted.item_ids[i][1:]) for i in neighbours[0]])
        assert (numbers // COMMUNITY_SIZE == community).all(), (cold, numbers)


def test_a_never_seen_item_gets_a_faiss_neighbour_and_a_score(fitted):
    vectors = np.asarray(fitted.item_embeddings, dtype=np.float32)
    faiss_index = build_index(vectors, index_spec(len(vectors), vectors.shape[1], Settings()))
    row = int(np.flatnonzero(fitted.item_ids == COLD_LAMP)[0])
    normed = vectors[row : row + 1] / np.linalg.norm(vectors[row])
    _, found = faiss_index.search(normed, 3)
    assert found[0][0] == row and int(fitted.item_ids[found[0][1]][1:]) < COMMUNITY_SIZE
    lamp_user = 0  # users 0-19 live in the lamp community
    scores = fitted._score(np.array([lamp_user, N_USERS - 1]))
    assert np.isfinite(scores[:, row]).all() and scores[0, row] > scores[1, row]


def test_cold_items_take_slots_in_the_published_lists(fitted):
    items = catalog_with_cold_items().assign(in_stock=True, is_blocked=False)
    user_recs, _ = build_lists(fitted, items, ListRules(top_n=5, cold_user_below=1))
    with_cold = user_recs[user_recs["item_id"].isin([COLD_LAMP, COLD_KETTLE])]
    assert len(with_cold) > 0
    lamp_fans = with_cold[with_cold["item_id"] == COLD_LAMP]["user_id"].str[1:].astype(int)
    assert (lamp_fans < N_USERS // 2).all()


def test_the_mapped_factors_survive_save_and_load(fitted, tmp_path):
    loaded = Recommender.load(fitted.save(tmp_path / "model"))
    assert list(loaded.item_ids) == list(fitted.item_ids)
    assert np.array_equal(loaded.item_factors, fitted.item_factors)


def test_without_content_it_refuses_with_a_reason_and_fit_raises_it():
    bare = Interactions.from_frame(community_walks())
    reason = hybrid().refuses(bare)
    assert "catalog gives no title, description, category or attributes" in reason
    with pytest.raises(NoContentError, match="no title, description"):
        hybrid().fit(bare)
    empty = catalog()[["item_id"]].assign(title=None, category=None)
    assert hybrid().refuses(Interactions.from_frame(community_walks(), catalog=empty)) is not None


def test_a_bad_encoder_name_is_refused_at_construction():
    with pytest.raises(ValueError, match="encoder must be one of"):
        ContentALSRecommender(encoder="word2vec")


def timed_log() -> tuple[EventLog, pd.DataFrame]:
    """The community walks as an event log, and a catalog whose two cold items launch on day 19."""
    walks = community_walks()
    frame = pd.DataFrame(
        {
            "user_id": walks["user_id"],
            "item_id": walks["item_id"],
            "event_ts": pd.to_datetime(walks["last_ts"], unit="s", utc=True),
            "weight": 1.0,
        }
    )
    # After the launch, every user touches the new item of its community once.
    launch = T0 + 19 * 86_400
    late = pd.DataFrame(
        {
            "user_id": [f"u{u:02d}" for u in range(N_USERS)],
            "item_id": [COLD_LAMP if u < N_USERS // 2 else COLD_KETTLE for u in range(N_USERS)],
            "event_ts": pd.to_datetime(launch + 3 * 86_400 + np.arange(N_USERS), unit="s", utc=True),
            "weight": 1.0,
        }
    )
    items = catalog_with_cold_items().assign(in_stock=True, is_blocked=False)
    created = np.where(items["item_id"].isin([COLD_LAMP, COLD_KETTLE]), launch, T0 - 30 * 86_400)
    items["created_at"] = created.astype(float)
    return EventLog.from_frame(pd.concat([frame, late]), 14.0, items.set_index("item_id")), items


def test_evaluation_credits_a_content_model_for_new_items_nobody_had_touched():
    log, items = timed_log()
    fold = global_time_folds(log, 1, test_days=2.5, step_days=2.5, new_item_days=3)[0]
    assert set(fold.unknown_item_ids) >= {COLD_LAMP, COLD_KETTLE} and fold.unknown_is_new.all()
    config = EvaluationConfig(k=5, recall_k=10, rules=ListRules(top_n=10, cold_user_below=1))
    collaborative = score_fold(
        ALSRecommender(factors=4, regularization=1.0, alpha=1.0).fit(fold.train), fold, items, config
    )
    content = score_fold(hybrid().fit(fold.train), fold, items, config)
    assert collaborative.metrics["new_items.recall_at_10"] == 0.0
    assert content.metrics["new_items.recall_at_10"] > 0.5
    assert content.metrics["new_item_exposure_at_5"] > collaborative.metrics["new_item_exposure_at_5"]


def test_scoring_a_model_fitted_on_another_fold_is_refused():
    log, items = timed_log()
    fold = global_time_folds(log, 1, test_days=2.5, step_days=2.5, new_item_days=3)[0]
    other = Interactions.from_frame(community_walks()[::-1], catalog=catalog_with_cold_items())
    model = hybrid().fit(Interactions(other.user_ids, other.item_ids[::-1].copy(), other.matrix, catalog=other.catalog))
    with pytest.raises(ValueError, match="do not start with this fold's"):
        fold.columns_for(model.item_ids)


@pytest.mark.skipif(not sentence_model_available(), reason="the optional 'content' extra is not installed")
def test_the_packaged_sentence_model_adds_unit_length_embeddings_offline():
    encoder = ContentEncoder(encoder="sentence")
    vectors = encoder.fit_transform(catalog_with_cold_items())
    assert encoder.uses_sentences and vectors.shape[1] == len(encoder.vocabulary) + 384
    assert np.allclose(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel(), 1.0, atol=1e-5)


def test_a_teaching_threshold_above_every_item_falls_back_to_all_touched_items():
    data = Interactions.from_frame(community_walks(), catalog=catalog_with_cold_items())
    model = ContentALSRecommender(
        factors=4, iterations=15, regularization=1.0, alpha=1.0, encoder="tfidf", map_warm_users=1000
    ).fit(data)
    assert model.n_cold_items == 2 and np.isfinite(model.item_factors).all()


def test_on_the_items_users_touched_it_is_exactly_als(fitted):
    """By default only untouched items are mapped: with and without content differ only on them."""
    data = Interactions.from_frame(community_walks(), item_features=catalog(), catalog=catalog_with_cold_items())
    plain = ALSRecommender(factors=4, iterations=15, regularization=1.0, alpha=1.0).fit(data)
    users = np.arange(N_USERS)
    assert np.array_equal(fitted._score(users)[:, : data.n_items], plain._score(users))


def test_diagnosing_a_user_of_the_content_model_counts_an_untouched_new_item_as_a_target():
    from models.evaluation.diagnosis import diagnose_user
    from models.lists.rules import catalog_status

    log, items = timed_log()
    fold = global_time_folds(log, 1, test_days=2.5, step_days=2.5, new_item_days=3)[0]
    model = hybrid().fit(fold.train)
    forbidden, names = catalog_status(model.item_ids, items)
    user = "u00"  # a lamp fan whose held-out item is the untouched lamp
    diagnosis = diagnose_user(model, [], fold, user, ListRules(top_n=10, cold_user_below=1), forbidden, names, 5, 10)
    assert COLD_LAMP in diagnosis.targets and COLD_LAMP not in diagnosis.unknown_targets
    assert fold.column_ids(model.item_ids)[len(model.item_ids) :].tolist() == []  # both cold items are the model's
