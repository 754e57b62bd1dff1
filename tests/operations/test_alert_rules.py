"""The serving levels' alert rules: generated from settings, and each one proven by promtool to
fire on a breach and stay silent without one (deploy/prometheus/rules_test.yml)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.operations.alert_rules import RULES_FILE, render
from pipelines.settings import REPO_ROOT, Settings
from tests.conftest import debian_tool

DEPLOY = REPO_ROOT / "deploy"


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_tool("promtool", "prometheus")


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_committed_rules_are_what_the_default_settings_render(tmp_path):
    assert RULES_FILE.read_text() == render(Settings(home=tmp_path)), (
        "deploy/prometheus/rules.yml is stale: run `recforge alert-rules` and commit it"
    )


def test_every_alert_fires_on_a_breach_and_stays_silent_without_one(promtool):
    checked = run([promtool, "check", "rules", str(RULES_FILE)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run([promtool, "test", "rules", "rules_test.yml"], cwd=RULES_FILE.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (RULES_FILE.parent / "rules_test.yml").read_text()))
    defined = {rule["alert"] for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]
               if "alert" in rule}  # fmt: skip
    assert defined == tested_alerts, f"alerts without a promtool test: {sorted(defined - tested_alerts)}"


def test_a_broken_threshold_fails_the_rule_tests(promtool, tmp_path):
    """Rules rendered with another error-rate level no longer match the tests: promtool says so."""
    (tmp_path / "rules.yml").write_text(render(Settings(home=tmp_path, slo_error_rate=0.05)))
    shutil.copy(RULES_FILE.parent / "rules_test.yml", tmp_path / "rules_test.yml")
    tested = run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path)
    assert tested.returncode != 0
    assert "RecforgeErrorRateHigh" in tested.stdout + tested.stderr


def test_the_prometheus_config_is_valid_and_scrapes_serving(promtool, tmp_path):
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/rules.yml", str(RULES_FILE))
    (tmp_path / "prometheus.yml").write_text(config)
    checked = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert jobs["recforge-serving"]["static_configs"][0]["targets"] == ["serving:8000"]


def test_the_alertmanager_config_is_valid_and_keeps_the_webhook_url_out(tmp_path):
    amtool = debian_tool("amtool", "prometheus-alertmanager")
    config = (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
    assert "url_file: /etc/alertmanager/webhook_url" in config and "http" not in config.split("receivers:")[1]
    # Debian's amtool (0.25) predates url_file (0.26, the image docker-compose.yml pins): it checks
    # everything else with a literal URL in its place.
    (tmp_path / "alertmanager.yml").write_text(
        config.replace("url_file: /etc/alertmanager/webhook_url", "url: http://127.0.0.1:9/hook")
    )
    checked = run([amtool, "check-config", str(tmp_path / "alertmanager.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_reads_only_series_that_exist():
    """Every Grafana query names a recorded series of rules.yml or a metric serving exports."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "recforge-serving.json").read_text())
    recorded = {rule["record"] for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]
                if "record" in rule}  # fmt: skip
    exported = set(re.findall(r'"(recforge_[a-z_]+)"', (REPO_ROOT / "serving" / "metrics.py").read_text()))
    titles = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        for target in panel["targets"]:
            names = set(re.findall(r"recforge[:_][a-z0-9_:]+", target["expr"]))
            unknown = {n for n in names if n not in recorded and n.removesuffix("_bucket") not in exported}
            assert names and not unknown, (panel["title"], unknown)
    text = " ".join(titles).lower()
    assert all(word in text for word in ("latency", "throughput", "fallback", "version", "age"))


def test_the_cli_renders_rules_for_other_levels_and_refuses_a_bad_one(tmp_path):
    recforge = [str(Path(sys.executable).with_name("recforge")), "alert-rules", "--output"]
    env = {**os.environ, "RECFORGE_HOME": str(tmp_path / "home"), "RECFORGE_SLO_ERROR_RATE": "0.05"}
    written = subprocess.run([*recforge, str(tmp_path / "rules.yml")], env=env, capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    assert "> 0.05" in (tmp_path / "rules.yml").read_text()
    env["RECFORGE_SLO_ERROR_RATE"] = "2"
    refused = subprocess.run([*recforge, str(tmp_path / "bad.yml")], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and not (tmp_path / "bad.yml").exists()
    assert "RECFORGE_SLO_ERROR_RATE" in refused.stderr, refused.stderr


def test_the_endpoint_labels_the_rules_select_are_the_apps_routes(tmp_path):
    """serving.metrics names the `endpoint` label values the rules and the health check select on."""
    from serving.config import ServingSettings
    from serving.main import create_app
    from serving.metrics import API_PREFIX, RECOMMENDATIONS_ENDPOINT

    paths = {route.path for route in create_app(ServingSettings(home=tmp_path)).routes}
    assert RECOMMENDATIONS_ENDPOINT in paths
    assert any(path.startswith(API_PREFIX) and path != RECOMMENDATIONS_ENDPOINT for path in paths)
