"""The promotion gate: may a challenger replace the champion? Every check is kept, with its numbers.

A challenger becomes champion only if
1. its mean NDCG@k (k = ``eval_k``) over the backtest folds beats the champion's x (1 + ``promotion_min_lift``):
   strictly, so a tie (an identical retrain scores exactly what the champion scores on the same folds)
   keeps the champion, unless ``promotion_allow_tie`` lets the fresher model take over at equal scores; and
2. no guardrail regresses beyond its tolerance: cold-segment NDCG@k at least the champion's x
   (1 - ``gate_max_cold_ndcg_drop``), catalog coverage@k at least the champion's x (1 - ``gate_max_coverage_drop``),
   and the exposure guardrail: the Gini of item exposure in the top k at most the champion's + ``gate_max_gini_rise``
   (an absolute tolerance: Gini is already a share in [0, 1], and a model that concentrates the slots on fewer
   items narrows what the catalog's sellers and long tail get even if its NDCG is better).
The metric names come from ``models.metrics.MetricNames`` at the configured cut-offs.

3. With ``promotion_requires_experiment_win`` on, one more check: the latest experiment readout with the
   challenger's model version as a variant (the tags ``recforge experiments readout`` sets on it,
   pipelines/experiments/registry_tags.py) said ship, with it the winner. Offline metrics pick the
   model worth testing; the online experiment decides. A freshly trained version has been in no
   experiment yet, so training leaves it challenger; once an experiment ships it,
   ``recforge models promote <version>`` passes. The first model (no champion yet) is promoted
   regardless: nothing would be served otherwise.

Both sides are measured on the same folds: training re-fits the champion's recipe (algorithm and
parameters, recorded on its model version) on the folds the challenger was scored on, so a change in
the data cannot pass for a better model. Only when that recipe cannot be rebuilt (an algorithm that
no longer exists) does the gate fall back to the metrics recorded at the champion's own training,
and it says so in the decision. The spread over folds is reported beside each mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from models.evaluation.backtest import STD_SUFFIX
from pipelines.settings import Settings
from pipelines.training.evaluation import metric_names


def primary_metric(settings: Settings) -> str:
    return metric_names(settings).primary


def guardrail_metrics(settings: Settings) -> dict[str, float]:
    """Guardrail metric -> allowed relative drop."""
    names = metric_names(settings)
    return {names.cold_primary: settings.gate_max_cold_ndcg_drop, names.coverage: settings.gate_max_coverage_drop}


def exposure_guardrail(settings: Settings) -> tuple[str, float]:
    """The exposure guardrail's metric (Gini of top-k exposure) and its allowed absolute rise."""
    return metric_names(settings).exposure_gini, settings.gate_max_gini_rise


def gate_metrics(settings: Settings) -> list[str]:
    """Every metric the gate reads: the primary one, then the guardrails."""
    return [primary_metric(settings), *guardrail_metrics(settings), exposure_guardrail(settings)[0]]


def missing_gate_metrics(settings: Settings, sides: dict[str, dict[str, float]]) -> str:
    """Why the sides (label -> metrics) cannot be compared, one clause per side lacking a gate metric; "" if all can.

    A version trained under another ``eval_k`` / ``recall_k`` carries the same metrics under other
    names (``ndcg_at_10`` where this gate asks for ``ndcg_at_20``); say so instead of a bare KeyError.
    """
    needed = gate_metrics(settings)
    return "; ".join(
        _missing_on_one_side(settings, needed, side, metrics)
        for side, metrics in sides.items()
        if any(m not in metrics for m in needed)
    )


def _missing_on_one_side(settings: Settings, needed: list[str], side: str, recorded: dict[str, float]) -> str:
    missing = [m for m in needed if m not in recorded]
    others = sorted(
        {
            name
            for m in missing
            for name in recorded
            if re.fullmatch(re.escape(m.rsplit("_at_", 1)[0]) + r"_at_\d+", name) and name != m
        }
    )
    message = f"{side} lacks {missing}"
    if others:
        message += (
            f" but has {others}: it was measured at other cut-offs than eval_k={settings.eval_k}, "
            f"recall_k={settings.recall_k}"
        )
    return message


@dataclass(frozen=True)
class Check:
    name: str
    metric: str
    challenger: float
    champion: float
    required: float
    rule: str
    challenger_std: float = 0.0
    champion_std: float = 0.0
    strict: bool = False  # must exceed `required` (beyond float noise), not merely reach it
    upper: bool = False  # `required` is a ceiling (lower is better, e.g. exposure Gini), not a floor

    @property
    def passed(self) -> bool:
        if self.upper:
            return self.challenger <= self.required + 1e-12
        if self.strict:
            return self.challenger > self.required + 1e-12
        return self.challenger >= self.required - 1e-12

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        needs = "<=" if self.upper else ">" if self.strict else ">="
        return (
            f"{verdict} {self.name}: {self.metric} challenger {self.challenger:.4f} (std {self.challenger_std:.4f}) "
            f"vs champion {self.champion:.4f} (std {self.champion_std:.4f}); "
            f"needs {needs} {self.required:.4f} = {self.rule}"
        )


@dataclass
class GateDecision:
    promoted: bool
    basis: str
    champion_version: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def reason(self) -> str:
        if self.champion_version is None or not self.checks:
            return self.basis
        if self.promoted:
            return f"all {len(self.checks)} checks passed against champion v{self.champion_version} ({self.basis})"
        failed = "; ".join(check.describe() for check in self.failed)
        return f"rejected against champion v{self.champion_version} ({self.basis}): {failed}"

    def tags(self) -> dict[str, str]:
        """What MLflow records on the training run and the model version."""
        tags = {
            "promotion.decision": "promoted" if self.promoted else "rejected",
            "promotion.reason": self.reason()[:5000],
            "promotion.basis": self.basis,
        }
        if self.champion_version is not None:
            tags["promotion.champion_version"] = self.champion_version
        for check in self.checks:
            tags[f"promotion.check.{check.name}"] = check.describe()
        return tags


def experiment_win_check(version_tags: dict[str, str]) -> Check:
    """Passes when the latest experiment readout tagged on the challenger's version says ship, it the winner."""
    from pipelines.experiments.registry_tags import readouts_in_tags

    readouts = readouts_in_tags(version_tags)
    if not readouts:
        rule = "promotion_requires_experiment_win: no experiment readout with this version as a variant yet"
        return Check("experiment_win", "experiment.*.decision", 0.0, 0.0, 1.0, rule)
    latest = readouts[0]
    return Check(
        "experiment_win", f"experiment.{latest.experiment}.decision", float(latest.won), 0.0, 1.0,
        f"promotion_requires_experiment_win: the latest readout ({latest.experiment}, {latest.read_out_at}) "
        f"must say ship with this version the winner; it says {latest.decision}, role {latest.role}",
    )  # fmt: skip


def decide(
    settings: Settings,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None = None,
    basis: str = "",
    version_tags: dict[str, str] | None = None,
) -> GateDecision:
    """Apply the lift check and every guardrail; promote only if all pass (or there is no champion).

    ``version_tags``: the challenger's model version tags, read for the experiment-win check when
    ``promotion_requires_experiment_win`` is on (None: a version with no tags)."""
    primary = primary_metric(settings)
    if champion is None:
        return GateDecision(True, f"no champion yet; {primary}={challenger.get(primary, 0.0):.4f}")
    missing = [m for m in gate_metrics(settings) if m not in challenger or m not in champion]
    if missing:
        why = missing_gate_metrics(settings, {"the challenger": challenger, "the champion": champion})
        raise ValueError(f"the gate needs {missing} for both challenger and champion: {why}")

    def check(
        name: str, metric: str, factor: float, rule: str, strict: bool = False, rise: float | None = None
    ) -> Check:
        return Check(
            name=name,
            metric=metric,
            challenger=challenger[metric],
            champion=champion[metric],
            required=champion[metric] * factor if rise is None else champion[metric] + rise,
            upper=rise is not None,
            rule=rule,
            challenger_std=challenger.get(metric + STD_SUFFIX, 0.0),
            champion_std=champion.get(metric + STD_SUFFIX, 0.0),
            strict=strict,
        )

    lift = settings.promotion_min_lift
    tie = "a tie passes (promotion_allow_tie)" if settings.promotion_allow_tie else "a tie keeps the champion"
    checks = [
        check("lift", primary, 1 + lift, f"champion x (1 + {lift:g} lift); {tie}", not settings.promotion_allow_tie)
    ]
    for metric, drop in guardrail_metrics(settings).items():
        name = "guardrail_" + metric.replace(".", "_")
        checks.append(check(name, metric, 1 - drop, f"champion x (1 - {drop:g} tolerance)"))
    gini, rise = exposure_guardrail(settings)
    checks.append(check("guardrail_exposure_gini", gini, 1.0, f"champion + {rise:g} (gate_max_gini_rise)", rise=rise))
    if settings.promotion_requires_experiment_win:
        checks.append(experiment_win_check(version_tags or {}))
    return GateDecision(all(c.passed for c in checks), basis, champion_version, checks)
