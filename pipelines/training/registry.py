"""What ``recforge models`` shows and does with the registry: list, compare, manual promotion, rollback.

Manual promotion goes through the same gate as training, but on the metrics recorded at each
version's own training (different data snapshots): it cannot re-run the same-fold comparison. A
version that fails it is promoted only with ``force``, and the version records what was bypassed.
Neither command publishes: run ``recforge publish`` (or trigger ``recforge_publish``) to serve it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from pipelines.settings import Settings
from pipelines.training.evaluation import metric_names, text_table
from pipelines.training.gate import decide, missing_gate_metrics
from pipelines.training.tracking import (
    CHAMPION,
    RegistryError,
    configure,
    make_champion,
    rollback_champion,
    version_by_alias,
)


class GateRefused(RegistryError):
    pass


@dataclass
class VersionFacts:
    version: str
    aliases: list[str]
    algorithm: str
    data_snapshot: str
    decision: str
    metrics: dict[str, float]


def _aliases(client, settings: Settings) -> dict[str, list[str]]:
    """version -> its aliases (search results do not carry them; the registered model does)."""
    by_version: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(settings.registered_model_name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def _facts(client, settings: Settings, version) -> VersionFacts:
    run = client.get_run(version.run_id) if version.run_id else None
    return VersionFacts(
        version=str(version.version),
        aliases=sorted(_aliases(client, settings).get(str(version.version), [])),
        algorithm=version.tags.get("model", "?"),
        data_snapshot=version.tags.get("data_snapshot", run.data.tags.get("data_snapshot", "?") if run else "?"),
        decision=version.tags.get("promotion.decision", "-"),
        metrics=dict(run.data.metrics) if run else {},
    )


def _version(client, settings: Settings, number: str):
    try:
        return client.get_model_version(settings.registered_model_name, str(number))
    except MlflowException:
        raise RegistryError(f"{settings.registered_model_name} has no version {number}") from None


def list_versions(settings: Settings) -> list[VersionFacts]:
    client = configure(settings)
    versions = client.search_model_versions(f"name = '{settings.registered_model_name}'")
    return [_facts(client, settings, v) for v in sorted(versions, key=lambda v: int(v.version), reverse=True)]


def format_versions(settings: Settings, facts: list[VersionFacts]) -> str:
    """One row per version with its key metrics at the configured cut-offs ("-" where a version lacks one)."""
    shown = metric_names(settings).key
    if not facts:
        return "no registered versions yet: run `recforge train`"
    rows = [
        [
            f"v{f.version}",
            ",".join(f.aliases) or "-",
            f.algorithm,
            f.data_snapshot,
            f.decision,
            *(f"{f.metrics[m]:.4f}" if m in f.metrics else "-" for m in shown),
        ]
        for f in facts
    ]
    return text_table(["version", "aliases", "model", "data snapshot", "gate", *shown], rows)


def compare_versions(settings: Settings, first: str, second: str) -> str:
    """A metric table of two versions (their recorded backtest means) with the difference."""
    client = configure(settings)
    a = _facts(client, settings, _version(client, settings, first))
    b = _facts(client, settings, _version(client, settings, second))
    keys = sorted(
        key
        for key in set(a.metrics) | set(b.metrics)
        if not key.endswith("_std") and ("." not in key or key.startswith(("segment.", "new_items.")))
    )
    rows = []
    for key in keys:
        x, y = a.metrics.get(key), b.metrics.get(key)
        diff = f"{y - x:+.4f}" if x is not None and y is not None else "-"
        rel = f"{(y - x) / x:+.1%}" if x not in (None, 0) and y is not None else "-"
        rows.append([key, "-" if x is None else f"{x:.4f}", "-" if y is None else f"{y:.4f}", diff, rel])
    header = (
        f"v{a.version} ({a.algorithm}, data {a.data_snapshot}, {','.join(a.aliases) or 'no alias'}) vs "
        f"v{b.version} ({b.algorithm}, data {b.data_snapshot}, {','.join(b.aliases) or 'no alias'}); "
        "recorded backtest means"
    )
    return header + "\n" + text_table(["metric", f"v{a.version}", f"v{b.version}", "diff", "relative"], rows)


def promote_version(settings: Settings, number: str, force: bool = False) -> str:
    """Make a version champion by hand: through the gate on recorded metrics, or past it with force."""
    client = configure(settings)
    name = settings.registered_model_name
    target = _facts(client, settings, _version(client, settings, number))
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and str(champion.version) == target.version:
        raise RegistryError(f"v{target.version} is already the champion")
    if champion is None:
        decision = decide(settings, target.metrics, None)
    else:
        current = _facts(client, settings, champion)
        missing = missing_gate_metrics(
            settings, {f"v{target.version}": target.metrics, f"v{current.version}": current.metrics}
        )
        if missing and not force:
            raise GateRefused(f"cannot apply the gate: {missing}. Use --force to promote it without the gate")
        basis = (
            f"manual: recorded metrics of v{target.version} (data {target.data_snapshot}) vs champion "
            f"v{current.version} (data {current.data_snapshot}), not a same-fold backtest"
        )
        tags = dict(client.get_model_version(name, target.version).tags or {})
        decision = None if missing else decide(settings, target.metrics, current.metrics, current.version, basis, tags)
        if decision is not None and not decision.promoted and not force:
            failed = "; ".join(check.describe() for check in decision.failed)
            raise GateRefused(
                f"v{target.version} fails the gate against champion v{current.version}: {failed}. "
                "Use --force to promote it anyway"
            )
    if decision is None:
        bypassed = "the whole gate (metrics missing)"
    else:
        bypassed = "none" if decision.promoted else ", ".join(c.name for c in decision.failed)
    previous = make_champion(client, name, target.version)
    tags = decision.tags() if decision is not None else {}
    tags.update(
        {
            "promotion.manual": "true",
            "promotion.bypassed": bypassed,
            "promotion.decision": "promoted (manual)"
            if decision is not None and decision.promoted
            else "forced (manual)",
        }
    )
    for key, value in tags.items():
        client.set_model_version_tag(name, target.version, key, value)
    return (
        f"v{target.version} ({target.algorithm}) is champion now (was {'v' + previous if previous else 'none'}); "
        f"gate on recorded metrics, not a same-fold backtest; bypassed: {bypassed}. "
        "Run `recforge publish` to serve it."
    )


def rollback(settings: Settings) -> str:
    client = configure(settings)
    current, target = rollback_champion(client, settings.registered_model_name)
    return f"champion rolled back from v{current} to v{target}. Run `recforge publish` to serve it."
