"""The promotion gate's optional experiment-win check (promotion_requires_experiment_win): off, the
offline checks decide alone; on, a challenger needs the latest readout it was a variant of to say ship
with it the winner (the tags pipelines/experiments/registry_tags.py writes)."""

from pipelines.experiments.registry_tags import readouts_in_tags
from pipelines.training.gate import decide

BASE = {"ndcg_at_10": 0.20, "segment.cold.ndcg_at_10": 0.10, "coverage_at_10": 0.50, "exposure_gini_at_10": 0.60}
BETTER = {**BASE, "ndcg_at_10": 0.25}


def readout_tags(name: str, decision: str, role: str, at: str) -> dict[str, str]:
    prefix = f"experiment.{name}"
    return {f"{prefix}.decision": decision, f"{prefix}.role": role, f"{prefix}.read_out_at": at}


def test_off_by_default_a_better_challenger_is_promoted_without_any_experiment(settings):
    assert settings.promotion_requires_experiment_win is False
    decision = decide(settings, BETTER, BASE, "1", "test")
    assert decision.promoted and "experiment_win" not in [c.name for c in decision.checks]


def test_on_a_challenger_never_in_an_experiment_is_not_promoted_and_the_reason_says_so(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    decision = decide(required, BETTER, BASE, "1", "test", {})
    assert not decision.promoted
    assert [c.name for c in decision.failed] == ["experiment_win"]
    assert "no experiment readout with this version as a variant" in decision.reason()


def test_on_a_challenger_the_latest_readout_shipped_as_winner_is_promoted(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    tags = {"other": "x", **readout_tags("home-ab", "ship", "winner", "2026-12-05T06:30:00+00:00")}
    assert decide(required, BETTER, BASE, "1", "test", tags).promoted


def test_on_only_the_latest_readout_counts(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    won_then_lost = {
        **readout_tags("first.ab", "ship", "winner", "2026-12-01T06:30:00+00:00"),
        **readout_tags("second.ab", "stop", "challenger", "2026-12-08T06:30:00+00:00"),
    }
    decision = decide(required, BETTER, BASE, "1", "test", won_then_lost)
    assert not decision.promoted
    assert "second.ab" in decision.reason() and "it says stop" in decision.reason()


def test_on_a_ship_for_another_variant_is_no_win(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    tags = readout_tags("home-ab", "ship", "control", "2026-12-05T06:30:00+00:00")
    assert not decide(required, BETTER, BASE, "1", "test", tags).promoted


def test_on_an_experiment_win_does_not_excuse_a_worse_offline_score(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    tags = readout_tags("home-ab", "ship", "winner", "2026-12-05T06:30:00+00:00")
    decision = decide(required, {**BASE, "ndcg_at_10": 0.10}, BASE, "1", "test", tags)
    assert not decision.promoted and [c.name for c in decision.failed] == ["lift"]


def test_on_the_first_model_is_promoted_with_no_champion_to_compare(settings):
    required = settings.model_copy(update={"promotion_requires_experiment_win": True})
    assert decide(required, BETTER, None).promoted


def test_a_readout_missing_one_of_its_tags_is_not_read():
    partial = {"experiment.home-ab.decision": "ship", "experiment.home-ab.role": "winner"}
    assert readouts_in_tags(partial) == []
