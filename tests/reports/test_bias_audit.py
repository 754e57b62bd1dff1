"""The bias audit: numbers on cases worked out by hand, then the pages training and publication write."""

import re

import numpy as np
import pytest
from mlflow import MlflowClient

from models.evaluation.evaluate import FoldAudit
from pipelines.reports.bias_audit import audit_lists
from pipelines.training.tracking import configure
from tests.conftest import screenshot


def tiny_audit(sellers=("", "", "", "")) -> FoldAudit:
    return FoldAudit(
        recommended=np.array([[0, 1], [0, 2], [0, 1], [0, 3]]),
        ndcg=np.array([1.0, 0.5, 0.2, 0.0]),
        calibration=np.array([0.1, 0.3, np.nan, 0.5]),
        segments=np.array(["power", "power", "cold", "cold"]),
        popularity=np.array([10.0, 5.0, 1.0, 1.0]),
        allowed=np.ones(4, dtype=bool),
        categories=np.array(["a", "a", "b", "b"], dtype=object),
        sellers=np.array(sellers, dtype=object),
    )


def test_the_audit_numbers_of_a_tiny_set_of_lists():
    result = audit_lists(tiny_audit(), "training", k=2)
    m = result.metrics
    # Exposure [4, 2, 1, 1]: sorted [1, 1, 2, 4] -> (-3 - 1 + 2 + 12) / (4 * 8) = 10 / 32.
    assert m["exposure_gini_at_2"] == pytest.approx(10 / 32)
    assert m["coverage_at_2"] == pytest.approx(1.0)
    assert m["long_tail_share_at_2"] == pytest.approx(4 / 8)  # items 1-3 are the tail
    assert m["segment.power.calibration_kl_at_2"] == pytest.approx(0.2)
    assert m["segment.cold.ndcg_at_2"] == pytest.approx(0.1)
    assert m["segment.cold.ndcg_at_2_ci_low"] < 0.1 < m["segment.cold.ndcg_at_2_ci_high"]
    shares = result.categories.set_index("category")["exposure_share"].to_dict()
    assert shares == pytest.approx({"a": 6 / 8, "b": 2 / 8})
    assert any("no seller" in note for note in result.notes), "a catalog without sellers says so"
    assert any("No champion" in note for note in result.notes)


def test_the_gap_test_compares_with_the_champion_on_the_same_users():
    champion = tiny_audit()
    challenger = tiny_audit(sellers=("s1", "s1", "s2", ""))
    challenger.ndcg = champion.ndcg + np.array([0.0, 0.0, 0.3, 0.3])  # cold users gain
    result = audit_lists(challenger, "training", k=2, reference=champion, reference_label="champion v1")
    gap = result.gaps.set_index("gap").loc["power - cold"]
    assert gap["champion"] == pytest.approx(0.65) and gap["challenger"] == pytest.approx(0.35)
    assert gap["change"] == pytest.approx(-0.3) and gap["verdict"] == "changed"
    assert result.sellers.set_index("seller")["exposure_share"].to_dict() == pytest.approx({"s1": 6 / 7, "s2": 1 / 7})


def test_training_and_publication_write_the_audit_and_log_it_on_the_mlflow_run(published, tmp_path, chromium):
    settings = published
    audit_dir = settings.reports_dir / "audit"
    client = MlflowClient(tracking_uri=configure(settings).tracking_uri)
    training_run = client.search_runs(
        [client.get_experiment_by_name(settings.mlflow_experiment).experiment_id],
        "attributes.run_name = 'training'",
    )[0]
    metrics = training_run.data.metrics
    assert "audit.exposure_gini_at_10" in metrics and "audit.segment.cold.ndcg_at_10_ci_low" in metrics
    assert "audit.seller_exposure_gini_at_10" in metrics  # the simulator's catalog has sellers
    assert metrics["exposure_gini_at_10"] >= 0  # the gate's guardrail metric, mean over folds
    artifacts = [a.path for a in client.list_artifacts(training_run.info.run_id, "reports/audit")]
    assert any(path.endswith(".html") for path in artifacts)

    champion = client.get_model_version_by_alias(settings.registered_model_name, "champion")
    published_metrics = client.get_run(champion.run_id).data.metrics
    assert "audit.published.exposure_gini_at_10" in published_metrics
    assert "audit.published.segment.casual.calibration_kl_at_10" in published_metrics

    index = (settings.reports_dir / "index.html").read_text()
    for kind in ("training", "publication"):
        page = audit_dir / f"{kind}-latest.html"
        text = page.read_text()
        assert f"href='audit/{kind}-latest.html'" in index
        assert "Exposure by seller" in text and "Exposure by category" in text
        assert "http://" not in text and "https://" not in text  # nothing fetched from the network
        assert len(re.findall(r"<img alt='[^']+' src='data:image/png;base64,", text)) == 3
    assert "NDCG@10 by segment" in (audit_dir / "training-latest.html").read_text()
    picture = tmp_path / "audit.png"
    shot = screenshot(chromium, (audit_dir / "training-latest.html").as_uri(), picture, window="1200,2600")
    assert shot.returncode == 0 and picture.stat().st_size > 30_000, shot.stderr[-2000:]
