"""Candidate models by registered name, configured from settings: new algorithms plug in by name.

A model class registers itself in ``models.base._REGISTRY`` under its ``name`` when its module is
imported. A candidate's constructor parameter ``p`` takes, in order: ``train_model_params[name][p]``
(an explicit choice, never tuned), else its tuned value (``pipelines/training/tuning.py``, when
training passes them), else the setting ``<name>_<p>`` if there is one (``als_factors``), else that of a
model it extends (``settings_names``: ``als_content`` takes ``als_factors``), else the class default;
``random_state`` is ``train_random_state``.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from functools import partial

import models  # noqa: F401  (importing the package registers its models)
from models.base import _REGISTRY, Recommender
from pipelines.settings import Settings


class UnknownCandidate(ValueError):
    pass


def model_class(name: str) -> type[Recommender]:
    """The registered class of a model name, importing ``models.<name>`` if it is not registered yet."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"models.{name}")
        except ImportError:
            pass
    if name not in _REGISTRY:
        raise UnknownCandidate(f"unknown model {name!r}: registered models are {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def candidate_params(name: str, settings: Settings, tuned: dict | None = None) -> dict:
    """Constructor arguments of one candidate, from settings and its tuned values (see the module docstring)."""
    cls = model_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    overrides = dict(settings.train_model_params.get(name, {}))
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"train_model_params[{name!r}] sets {unknown}, which {cls.__name__} does not take: {accepted}")
    params = {}
    for parameter in accepted:
        if parameter in overrides:
            params[parameter] = overrides[parameter]
        elif tuned and parameter in tuned:
            params[parameter] = tuned[parameter]
        elif parameter == "random_state":
            params[parameter] = settings.train_random_state
        else:
            for prefix in getattr(cls, "settings_names", (name,)):
                if f"{prefix}_{parameter}" in type(settings).model_fields:
                    params[parameter] = getattr(settings, f"{prefix}_{parameter}")
                    break
    return params


def candidate_factories(
    settings: Settings, tuned: dict[str, dict] | None = None
) -> dict[str, Callable[[], Recommender]]:
    """name -> a function that makes a fresh, unfitted model, for every configured candidate.

    ``tuned``: model name -> its tuned parameter values, which take the place of settings and defaults;
    a model that extends another (``settings_names``) also takes that one's tuned values for the
    parameters it shares, its own first.
    """
    if not settings.train_candidates:
        raise ValueError("train_candidates is empty: name at least one registered model")
    duplicates = sorted({n for n in settings.train_candidates if settings.train_candidates.count(n) > 1})
    if duplicates:
        raise ValueError(f"train_candidates names {duplicates} more than once")
    tuned = tuned or {}
    return {
        name: partial(model_class(name), **candidate_params(name, settings, inherited_tuned(name, tuned)))
        for name in settings.train_candidates
    }


def inherited_tuned(name: str, tuned: dict[str, dict]) -> dict:
    """A model's tuned values over those of the models it extends (``settings_names``: ALS's for als_content)."""
    merged: dict = {}
    for prefix in reversed(getattr(model_class(name), "settings_names", (name,))):
        merged.update(tuned.get(prefix, {}))
    return merged


def recipe_factory(name: str, params: dict) -> Callable[[], Recommender]:
    """A fresh model of a recorded recipe (algorithm name + params), e.g. the champion's."""
    return partial(model_class(name), **params)


def recorded_params(params: dict) -> dict:
    """Parameters as a JSON record gives them back (tuples as lists, say): what a stored recipe is compared with.

    The registry's ``model_params`` tag and a kept fold fit's ``fold.json`` both hold a recipe as JSON, so a live
    model's ``params()`` is the same recipe exactly when its recorded form is equal.
    """
    return json.loads(json.dumps(params))
