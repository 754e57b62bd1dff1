"""Declarations for the experiment tests: a valid two-arm experiment with a holdback, as a mapping."""

from __future__ import annotations

import copy

import pytest
import yaml

VALID = {
    "name": "home-ab",
    "salt": "s1",
    "variants": [
        {"name": "control", "alias": "champion", "share": 0.45},
        {"name": "challenger", "alias": "challenger", "share": 0.45},
    ],
    "holdback": 0.10,
    "shadow": [{"name": "shadowed", "version": "12"}],
    "start": "2026-12-01T00:00:00+00:00",
    "end": "2026-12-15T00:00:00+00:00",
    "primary_metric": "ctr",
    "guardrails": [{"metric": "conversion", "max_drop": 0.05}],
}


def declaration(**changes) -> dict:
    """VALID with top-level fields replaced (a value of None removes the field)."""
    raw = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def write_declarations(folder, *experiments: dict, name: str = "experiments.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({"experiments": list(experiments)}, sort_keys=False))
    return path


# The registry behind VALID's aliases, for `recforge experiments start` (the real one asks MLflow).
REGISTRY = {"champion": "3", "challenger": "4"}
# A complete publication of each registry version VALID names (the shadow names version 12).
PUBLISHED = ("20261130T000000000000Z-v3", "20261130T000000000000Z-v4", "20261130T000000000000Z-v12")


def registry_version(settings, alias: str) -> str | None:
    return REGISTRY.get(alias)


@pytest.fixture
def declared(settings):
    """Settings whose RECFORGE_HOME/experiments/ declares VALID (and no repository declarations), with a
    publication (its manifest only: start never reads more) of every model version VALID names."""
    settings = settings.model_copy(update={"experiments_dir": settings.home / "no-repo-declarations"})
    write_declarations(settings.home_experiments_dir, VALID)
    for version in PUBLISHED:
        (settings.home / "published" / version).mkdir(parents=True)
        (settings.home / "published" / version / "manifest.json").write_text("{}")
    return settings
