"""The promotion gate: may a challenger replace the champion? Every check is kept, with its numbers.

A challenger becomes champion only if
1. its mean NDCG@10 over the backtest folds reaches the champion's x (1 + ``promotion_min_lift``), and
2. no guardrail regresses beyond its tolerance: cold-segment NDCG@10 at least the champion's x
   (1 - ``gate_max_cold_ndcg_drop``), catalog coverage@10 at least the champion's x (1 - ``gate_max_coverage_drop``).

Both sides are measured on the same folds: training re-fits the champion's recipe (algorithm and
parameters, recorded on its model version) on the folds the challenger was scored on, so a change in
the data cannot pass for a better model. Only when that recipe cannot be rebuilt (an algorithm that
no longer exists) does the gate fall back to the metrics recorded at the champion's own training,
and it says so in the decision. The spread over folds is reported beside each mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.evaluation.backtest import STD_SUFFIX
from pipelines.settings import Settings


def primary_metric(settings: Settings) -> str:
    return f"ndcg_at_{settings.eval_k}"


def guardrail_metrics(settings: Settings) -> dict[str, float]:
    """Guardrail metric -> allowed relative drop."""
    return {
        f"segment.cold.ndcg_at_{settings.eval_k}": settings.gate_max_cold_ndcg_drop,
        f"coverage_at_{settings.eval_k}": settings.gate_max_coverage_drop,
    }


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

    @property
    def passed(self) -> bool:
        return self.challenger >= self.required - 1e-12

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict} {self.name}: {self.metric} challenger {self.challenger:.4f} (std {self.challenger_std:.4f}) "
            f"vs champion {self.champion:.4f} (std {self.champion_std:.4f}); needs >= {self.required:.4f} = {self.rule}"
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


def decide(
    settings: Settings,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None = None,
    basis: str = "",
) -> GateDecision:
    """Apply the lift check and every guardrail; promote only if all pass (or there is no champion)."""
    primary = primary_metric(settings)
    if champion is None:
        return GateDecision(True, f"no champion yet; {primary}={challenger.get(primary, 0.0):.4f}")
    missing = [m for m in (primary, *guardrail_metrics(settings)) if m not in challenger or m not in champion]
    if missing:
        raise ValueError(f"the gate needs {missing} for both challenger and champion")

    def check(name: str, metric: str, factor: float, rule: str) -> Check:
        return Check(
            name=name,
            metric=metric,
            challenger=challenger[metric],
            champion=champion[metric],
            required=champion[metric] * factor,
            rule=rule,
            challenger_std=challenger.get(metric + STD_SUFFIX, 0.0),
            champion_std=champion.get(metric + STD_SUFFIX, 0.0),
        )

    lift = settings.promotion_min_lift
    checks = [check("lift", primary, 1 + lift, f"champion x (1 + {lift:g} lift)")]
    for metric, drop in guardrail_metrics(settings).items():
        name = "guardrail_" + metric.replace(".", "_")
        checks.append(check(name, metric, 1 - drop, f"champion x (1 - {drop:g} tolerance)"))
    return GateDecision(all(c.passed for c in checks), basis, champion_version, checks)
