"""Experiment declarations: files under version control (``experiments/`` in the repository) or in
RECFORGE_HOME/experiments/, YAML (``.yaml``/``.yml``) or TOML (``.toml``), each holding a list
``experiments``. Reading validates everything a wrong declaration could break, and a rejection is one
line naming the file, the experiment and the field.

Example (YAML)::

    experiments:
      - name: home-als-vs-ease
        salt: "2026-12"               # change it to reshuffle users (a new experiment on the same name)
        variants:                     # publication versions or registry aliases; the first is the control
          - {name: control, alias: champion, share: 0.45}
          - {name: ease, alias: challenger, share: 0.45}
        holdback: 0.10                # these users get the popularity fallback
        shadow: [{name: sasrec, version: "12"}]   # computed and logged as shadow, never shown
        start: 2026-12-01T00:00:00Z
        end: 2026-12-15T00:00:00Z
        primary_metric: ctr
        guardrails: [{metric: conversion, max_drop: 0.05}]
        canary:                       # optional: the variant's share ramps up to its declared share
          variant: ease
          schedule: [{at: 2026-12-01T00:00:00Z, share: 0.05}, {at: 2026-12-03T00:00:00Z, share: 0.45}]
          rollback: {max_error_rate: 0.01, max_p99_seconds: 0.1, max_ctr_drop: 0.2}

Shares of the variants and the holdback sum to 1. The start/stop state lives beside, in
RECFORGE_HOME/experiments/state.json (pipelines/experiments/state.py), never in the declaration.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

from pipelines.experiments.contract import HOLDBACK, METRICS
from pipelines.settings import Settings
from serving.experiments import Assignment

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
SUFFIXES = (".yaml", ".yml", ".toml")
SHARE_TOLERANCE = 1e-9


class InvalidDeclaration(ValueError):
    """One line: the file, the experiment and the field that is wrong, and why."""


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    version: str | None = None  # a publication version ...
    alias: str | None = None  # ... or a registry alias (champion, challenger)

    @property
    def source(self) -> str:
        return f"version {self.version}" if self.version is not None else f"alias {self.alias}"


@dataclass(frozen=True)
class Guardrail:
    metric: str
    max_drop: float  # relative: 0.05 means the variant may not be significantly more than 5% below control


@dataclass(frozen=True)
class CanaryStep:
    at: datetime
    share: float


@dataclass(frozen=True)
class Canary:
    variant: str
    schedule: tuple[CanaryStep, ...]
    max_error_rate: float | None = None
    max_p99_seconds: float | None = None
    max_ctr_drop: float | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]  # the first is the control
    start: datetime
    end: datetime
    source: Path
    salt: str = ""
    holdback: float = 0.0
    shadow: tuple[Variant, ...] = ()
    primary_metric: str = "ctr"
    guardrails: tuple[Guardrail, ...] = ()
    canary: Canary | None = None
    description: str = ""

    @property
    def control(self) -> str:
        return self.variants[0].name

    @property
    def arms(self) -> tuple[str, ...]:
        """Every group users are assigned to: the variants, then the holdback if it has a share."""
        return tuple(v.name for v in self.variants) + ((HOLDBACK,) if self.holdback > 0 else ())

    @property
    def assignment(self) -> Assignment:
        """What the server routes by (serving/experiments.py), written into the state on start."""
        return Assignment(
            self.name, self.salt, tuple((v.name, v.share) for v in self.variants), self.holdback,
            self.canary.variant if self.canary else None,
            tuple((s.at, s.share) for s in self.canary.schedule) if self.canary else (),
            tuple(v.name for v in self.shadow),
        )  # fmt: skip

    def shares_at(self, when: datetime | None = None) -> list[tuple[str, float]]:
        """(arm, share) in layout order at `when`: see serving.experiments.Assignment.shares_at."""
        return self.assignment.shares_at(when)

    def assign(self, user_id: str, when: datetime | None = None) -> str | None:
        return self.assignment.variant(user_id, when)


@dataclass
class _Reader:
    """Reads one experiment's mapping, raising InvalidDeclaration that names file, experiment and field."""

    path: Path
    experiment: str
    raw: dict = field(default_factory=dict)

    def fail(self, where: str, why: str) -> InvalidDeclaration:
        return InvalidDeclaration(f"{self.path}: experiment {self.experiment!r}: {where}: {why}")

    def text(self, mapping: dict, key: str, where: str, required: bool = True) -> str | None:
        value = mapping.get(key)
        if value is None:
            if required:
                raise self.fail(where, "missing")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(where, f"must be a string, not {value!r}")
        return str(value)

    def share(self, value, where: str, low_open: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(where, f"must be a number in (0, 1], not {value!r}")
        if not (0 < value <= 1 if low_open else 0 <= value <= 1):
            raise self.fail(where, f"must lie in {'(0, 1]' if low_open else '[0, 1]'}, not {value}")
        return float(value)

    def moment(self, value, where: str) -> datetime:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value, datetime.min.time())
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(where, f"not an ISO date or time: {value!r}") from None
        else:
            raise self.fail(where, f"must be a date or time, not {value!r}")
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def variant(self, raw, where: str, shadow: bool) -> Variant:
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be a mapping with name and version or alias, not {raw!r}")
        unknown = set(raw) - {"name", "version", "alias", "share"}
        if unknown:
            raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown field")
        name = self.text(raw, "name", f"{where}.name")
        if not NAME.fullmatch(name) or name == HOLDBACK:
            raise self.fail(f"{where}.name", f"{name!r} must be lower-case letters, digits, '._-' and not {HOLDBACK!r}")
        version, alias = (
            self.text(raw, "version", f"{where}.version", False),
            self.text(raw, "alias", f"{where}.alias", False),
        )
        if (version is None) == (alias is None):
            raise self.fail(where, f"variant {name!r} needs exactly one of version (a publication) or alias (registry)")
        if shadow:
            if "share" in raw:
                raise self.fail(f"{where}.share", "a shadow variant is never shown, so it has no share")
            return Variant(name, 0.0, version, alias)
        return Variant(name, self.share(raw.get("share"), f"{where}.share"), version, alias)

    def guardrail(self, raw, where: str) -> Guardrail:
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be a mapping {{metric, max_drop}}, not {raw!r}")
        metric = self.text(raw, "metric", f"{where}.metric")
        if metric not in METRICS:
            raise self.fail(f"{where}.metric", f"{metric!r} is not one of {', '.join(METRICS)}")
        return Guardrail(metric, self.share(raw.get("max_drop"), f"{where}.max_drop", low_open=False))


def parse_experiment(raw: object, path: Path, position: int) -> Experiment:
    """One experiment from its mapping, validated; raises InvalidDeclaration naming what is wrong."""
    if not isinstance(raw, dict):
        raise InvalidDeclaration(f"{path}: experiments[{position}]: must be a mapping, not {raw!r}")
    name = raw.get("name")
    reader = _Reader(path, str(name) if name is not None else f"#{position}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise reader.fail("name", f"{name!r} must be 1-64 lower-case letters, digits, '._-', starting alphanumeric")
    allowed = {
        "name", "salt", "variants", "holdback", "shadow", "start", "end", "primary_metric", "guardrails",
        "canary", "description",
    }  # fmt: skip
    unknown = set(raw) - allowed
    if unknown:
        raise reader.fail(sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(allowed))})")

    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or len(variants_raw) < 1:
        raise reader.fail("variants", "must be a list of at least one variant (the first is the control)")
    variants = tuple(reader.variant(v, f"variants[{i}]", shadow=False) for i, v in enumerate(variants_raw))
    shadow_raw = raw.get("shadow") or []
    if not isinstance(shadow_raw, list):
        raise reader.fail("shadow", "must be a list of variants")
    shadow = tuple(reader.variant(v, f"shadow[{i}]", shadow=True) for i, v in enumerate(shadow_raw))
    names = [v.name for v in (*variants, *shadow)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise reader.fail("variants", f"variant name {duplicates[0]!r} is used twice")
    holdback = reader.share(raw.get("holdback", 0.0), "holdback", low_open=False)
    if holdback >= 1:
        raise reader.fail("holdback", "must be below 1: the variants need some traffic")
    if len(variants) + (holdback > 0) < 2:
        raise reader.fail("variants", "an experiment compares at least two arms (two variants, or one and a holdback)")
    total = sum(v.share for v in variants) + holdback
    if abs(total - 1) > SHARE_TOLERANCE:
        raise reader.fail("variants", f"shares of the variants and the holdback sum to {total:g}, not 1")

    start = reader.moment(raw.get("start"), "start")
    end = reader.moment(raw.get("end"), "end")
    if end <= start:
        raise reader.fail("end", f"{end.isoformat()} is not after start {start.isoformat()}")
    salt = reader.text(raw, "salt", "salt", required=False) or ""
    primary = reader.text(raw, "primary_metric", "primary_metric", required=False) or "ctr"
    if primary not in METRICS:
        raise reader.fail("primary_metric", f"{primary!r} is not one of {', '.join(METRICS)}")
    guardrails_raw = raw.get("guardrails") or []
    if not isinstance(guardrails_raw, list):
        raise reader.fail("guardrails", "must be a list of {metric, max_drop}")
    guardrails = tuple(reader.guardrail(g, f"guardrails[{i}]") for i, g in enumerate(guardrails_raw))
    canary = _canary(reader, raw.get("canary"), variants, start, end) if raw.get("canary") is not None else None
    description = reader.text(raw, "description", "description", required=False) or ""
    return Experiment(
        name, variants, start, end, path, salt, holdback, shadow, primary, guardrails, canary, description
    )


def _canary(reader: _Reader, raw, variants: tuple[Variant, ...], start: datetime, end: datetime) -> Canary:
    if not isinstance(raw, dict):
        raise reader.fail("canary", "must be a mapping {variant, schedule, rollback}")
    unknown = set(raw) - {"variant", "schedule", "rollback"}
    if unknown:
        raise reader.fail(f"canary.{sorted(unknown)[0]}", "unknown field")
    name = reader.text(raw, "variant", "canary.variant")
    by_name = {v.name: v for v in variants}
    if name not in by_name:
        raise reader.fail("canary.variant", f"{name!r} is not a declared variant")
    if name == variants[0].name:
        raise reader.fail("canary.variant", f"{name!r} is the control; a canary ramps a challenger")
    schedule_raw = raw.get("schedule")
    if not isinstance(schedule_raw, list) or not schedule_raw:
        raise reader.fail("canary.schedule", "must be a non-empty list of {at, share}")
    steps = []
    for i, step in enumerate(schedule_raw):
        where = f"canary.schedule[{i}]"
        if not isinstance(step, dict) or set(step) != {"at", "share"}:
            raise reader.fail(where, f"must be a mapping {{at, share}}, not {step!r}")
        steps.append(
            CanaryStep(reader.moment(step["at"], f"{where}.at"), reader.share(step["share"], f"{where}.share"))
        )
        if not start <= steps[-1].at < end:
            raise reader.fail(f"{where}.at", f"{steps[-1].at.isoformat()} is outside [start, end)")
        if steps[-1].share > by_name[name].share + SHARE_TOLERANCE:
            raise reader.fail(
                f"{where}.share", f"{steps[-1].share:g} exceeds the variant's share {by_name[name].share:g}"
            )
        if i and (steps[-1].at <= steps[-2].at or steps[-1].share < steps[-2].share):
            raise reader.fail(where, "steps must come in time order with shares that never fall")
    rollback = raw.get("rollback") or {}
    if not isinstance(rollback, dict):
        raise reader.fail("canary.rollback", "must be a mapping of max_error_rate, max_p99_seconds, max_ctr_drop")
    limits = {}
    for key in ("max_error_rate", "max_p99_seconds", "max_ctr_drop"):
        if key in rollback:
            value = rollback[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
                raise reader.fail(f"canary.rollback.{key}", f"must be a positive number, not {value!r}")
            limits[key] = float(value)
    unknown = set(rollback) - {"max_error_rate", "max_p99_seconds", "max_ctr_drop"}
    if unknown:
        raise reader.fail(f"canary.rollback.{sorted(unknown)[0]}", "unknown field")
    return Canary(name, tuple(steps), **limits)


def read_file(path: Path) -> list[Experiment]:
    """The experiments one declaration file holds."""
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidDeclaration(f"{path}: cannot read: {first}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
        raise InvalidDeclaration(f"{path}: experiments: the file must hold a list named 'experiments'")
    return [parse_experiment(raw, path, i) for i, raw in enumerate(data["experiments"])]


def declaration_files(settings: Settings) -> list[Path]:
    """Every declaration file: the repository's experiments/ first, then RECFORGE_HOME/experiments/."""
    files = []
    for folder in (settings.experiments_dir, settings.home_experiments_dir):
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    return files


def load_experiments(settings: Settings, files: Iterable[Path] | None = None) -> dict[str, Experiment]:
    """Every declared experiment by name; a name declared twice is refused naming both files."""
    found: dict[str, Experiment] = {}
    for path in declaration_files(settings) if files is None else files:
        for experiment in read_file(path):
            if experiment.name in found:
                raise InvalidDeclaration(
                    f"{path}: experiment {experiment.name!r}: name: already declared in {found[experiment.name].source}"
                )
            found[experiment.name] = experiment
    return found


def get_experiment(settings: Settings, name: str) -> Experiment:
    experiments = load_experiments(settings)
    if name not in experiments:
        known = ", ".join(sorted(experiments)) or "none"
        raise InvalidDeclaration(f"no experiment named {name!r} is declared (declared: {known})")
    return experiments[name]
