"""The default candidate set: every algorithm trains, or refuses with its reason on the training run."""

from __future__ import annotations

import pytest

from pipelines.settings import Settings
from pipelines.training.evaluation import REFUSED_TAG
from pipelines.training.tracking import configure
from pipelines.training.train import train_and_register
from tests.conftest import copy_home

DEFAULT_CANDIDATES = Settings.model_fields["train_candidates"].default


def child_models(client, run_id: str) -> list[str]:
    experiment = client.get_run(run_id).info.experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    return sorted(run.data.tags["model"] for run in runs)


def test_the_default_set_is_every_algorithm_family():
    assert {"ease", "itemknn_bm25", "als", "als_content", "bpr", "popularity_recent", "sasrec", "ranker"} <= set(
        DEFAULT_CANDIDATES
    )


def test_the_default_candidate_set_trains_end_to_end_and_the_ranker_refuses_too_short_folds(built, tmp_path):
    # The tiny log's earliest fold has 3 days of training: too short for the ranker's 7-day label window.
    # SASRec's and BPR's most epochs lowered: the test is that every model trains, not how well.
    quick = {"sasrec": {"epochs": 4}, "bpr": {"iterations": 40}}
    settings = copy_home(built, tmp_path / "home", train_candidates=DEFAULT_CANDIDATES, train_model_params=quick)
    result = train_and_register(settings)
    assert set(result.refusals) == {"ranker"}
    assert "label window(s) of 7 days" in result.refusals["ranker"]
    assert set(result.metrics) == set(DEFAULT_CANDIDATES) - {"ranker"}
    client = configure(settings)
    assert child_models(client, result.run_id) == sorted(set(DEFAULT_CANDIDATES) - {"ranker"})
    assert client.get_run(result.run_id).data.tags[REFUSED_TAG].startswith("ranker: the ranker needs more than 7 days")
    assert result.best_model in result.metrics and result.promoted
    assert "refused ranker" in result.summary()


def test_an_explicit_candidate_the_data_cannot_support_is_refused_not_fitted(trained, tmp_path):
    settings = copy_home(
        trained[0],
        tmp_path / "home",
        train_candidates=["ease", "popularity"],
        train_model_params={"ease": {"max_items": 10}},
    )
    result = train_and_register(settings)
    assert "above max_items=10" in result.refusals["ease"]
    assert set(result.metrics) == {"popularity"} and not result.failures
    assert "ease: EASE needs a dense" in configure(settings).get_run(result.run_id).data.tags[REFUSED_TAG]


def test_training_fails_naming_the_reasons_when_every_candidate_is_refused(trained, tmp_path):
    settings = copy_home(
        trained[0], tmp_path / "home", train_candidates=["ease"], train_model_params={"ease": {"max_items": 10}}
    )
    with pytest.raises(RuntimeError, match="every candidate failed or was refused: ease refused: EASE needs a dense"):
        train_and_register(settings)


def test_als_content_takes_als_settings_and_tuned_values_under_its_own():
    from pipelines.training.candidates import candidate_factories

    settings = Settings(train_candidates=["als", "als_content"], als_iterations=7, als_content_encoder="tfidf")
    tuned = {"als": {"factors": 40, "alpha": 3.0}, "als_content": {"map_warm_users": 7, "alpha": 5.0}}
    model = candidate_factories(settings, tuned)["als_content"]()
    assert (model.factors, model.iterations, model.encoder) == (40, 7, "tfidf")
    assert (model.alpha, model.map_warm_users) == (5.0, 7)  # its own tuned value wins over ALS's
