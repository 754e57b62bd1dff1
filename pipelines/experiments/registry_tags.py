"""The readout's decision, tagged on the registered model version behind each variant (MLflow).

A variant names a registry alias (resolved to its version now) or a publication version (whose
manifest names the model version it was published from). Each such version gets the tags
``experiment.<name>.decision`` (ship, stop, keep running), ``.role`` (control, challenger, winner)
and ``.read_out_at``, so `recforge models list` and the MLflow UI show what the experiment said. A
variant that resolves to no version is named in the readout's notes, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.experiments.declaration import Experiment, Variant
from pipelines.experiments.stats import SHIP
from pipelines.settings import Settings

TAG_PREFIX = "experiment."  # then <experiment name>.<key>, key one of TAG_KEYS
TAG_KEYS = ("decision", "role", "read_out_at")
WINNER = "winner"


@dataclass(frozen=True)
class TaggedReadout:
    """One experiment's readout as tagged on a model version."""

    experiment: str
    decision: str
    role: str
    read_out_at: str  # ISO 8601, UTC: sorts in time order

    @property
    def won(self) -> bool:
        return self.decision == SHIP and self.role == WINNER


def readouts_in_tags(tags: dict[str, str]) -> list[TaggedReadout]:
    """The readouts tagged on a model version (its tags as a mapping), latest first; a readout missing
    one of its three tags is left out (it was never completely written)."""
    found: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        if not key.startswith(TAG_PREFIX):
            continue
        name, _, part = key.removeprefix(TAG_PREFIX).rpartition(".")
        if name and part in TAG_KEYS:
            found.setdefault(name, {})[part] = value
    complete = [TaggedReadout(name, **parts) for name, parts in found.items() if set(parts) == set(TAG_KEYS)]
    return sorted(complete, key=lambda r: r.read_out_at, reverse=True)


def _model_version(client, settings: Settings, variant: Variant) -> tuple[str | None, str]:
    """(model version or None, why not) of one variant."""
    from serving.format import PublicationError, read_manifest, version_directory

    if variant.alias is not None:
        from pipelines.training.tracking import version_by_alias

        found = version_by_alias(client, settings.registered_model_name, variant.alias)
        return (str(found.version), "") if found else (None, f"alias {variant.alias} is not set")
    try:
        manifest = read_manifest(version_directory(settings.published_dir, variant.version))
        return str(manifest["model"]["version"]), ""
    except (PublicationError, KeyError, TypeError) as error:
        return None, f"publication {variant.version} unreadable ({error})"


def tag_decision(settings: Settings, experiment: Experiment, readout) -> list[str]:
    """Tag every variant's model version with the decision; return notes on variants left untagged."""
    from pipelines.training.tracking import configure

    if settings.mlflow_tracking_uri is None and not (settings.mlflow_dir / "mlflow.db").exists():
        return ["decision not tagged in MLflow: this home has no registry yet"]
    client = configure(settings)
    winner = readout.analysis.reasons[0].removeprefix("ship ") if readout.decision == SHIP else None
    notes = []
    prefix = f"{TAG_PREFIX}{experiment.name}"
    for variant in experiment.variants:
        version, why = _model_version(client, settings, variant)
        if version is None:
            notes.append(f"{variant.name} not tagged in MLflow: {why}")
            continue
        role = WINNER if variant.name == winner else "control" if variant.name == experiment.control else "challenger"
        for key, value in (
            ("decision", readout.decision),
            ("role", role),
            ("read_out_at", readout.as_of.isoformat(timespec="seconds")),
        ):
            client.set_model_version_tag(settings.registered_model_name, version, f"{prefix}.{key}", value)
    return notes
