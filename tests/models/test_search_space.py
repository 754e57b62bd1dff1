"""Every model's search space names parameters its constructor takes, with the default inside the range.

The tuner trusts these specs: a renamed parameter or a default moved outside its range would make
trials fail or leave the defaults out of the study, so it fails here, next to the models.
"""

import inspect

import pytest

import models  # noqa: F401  (registers every algorithm)
from models.base import _REGISTRY
from models.search import Choice, FloatRange, IntRange

TUNED = ["als", "bpr", "ease", "itemknn_cosine", "itemknn_bm25", "popularity_recent", "sasrec", "ranker"]


@pytest.mark.parametrize("name", TUNED)
def test_each_candidate_declares_a_search_space(name):
    assert _REGISTRY[name].search_space()


@pytest.mark.parametrize("name", sorted(n for n in _REGISTRY if n in TUNED or n == "popularity"))
def test_a_search_space_names_constructor_parameters_with_their_defaults_inside(name):
    cls = _REGISTRY[name]
    parameters = inspect.signature(cls.__init__).parameters
    resolved = cls().params()  # a default resolved from other parameters (BPR's step) is None in the signature
    for parameter, spec in cls.search_space().items():
        assert parameter in parameters, f"{name}.search_space() names {parameter}, which {cls.__name__} does not take"
        default = resolved.get(parameter, parameters[parameter].default)
        assert spec.contains(default), f"{name}: default {parameter}={default!r} lies outside {spec}"


def test_plain_popularity_has_nothing_to_tune():
    assert _REGISTRY["popularity"].search_space() == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda: FloatRange(1.0, 1.0),
        lambda: FloatRange(0.0, 1.0, log=True),
        lambda: IntRange(5, 2),
        lambda: Choice((1,)),
    ],
)
def test_an_empty_or_impossible_range_is_refused(make):
    with pytest.raises(ValueError):
        make()
