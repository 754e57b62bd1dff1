"""The Prometheus recording and alerting rules of the serving levels, rendered from settings.

Each threshold is defined once, as a ``slo_*`` field of pipelines/settings.py; this module turns
them into a Prometheus rules file. deploy/prometheus/rules.yml is its output for the default
settings, committed because Prometheus (docker-compose.yml) reads it from there;
tests/operations/test_alert_rules.py checks that file equals a fresh render and runs
``promtool test rules`` on it, so a rule that stops firing on a breach, or fires without one,
fails ``make test``. ``recforge alert-rules --output PATH`` renders it for other settings.

The metric names are serving's own (serving/metrics.py); only the API endpoints (/v1/...) count
towards latency and errors, not /metrics, /healthz or the docs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.settings import REPO_ROOT, Settings
from serving.metrics import (
    API_PREFIX,
    FALLBACKS,
    LATENCY,
    LIVE_PUBLICATION,
    PUBLICATION_AGE,
    RECOMMENDATIONS_ENDPOINT,
    REQUESTS,
)

RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
SERVING_JOB = "recforge-serving"  # the scrape job in deploy/prometheus/prometheus.yml
API = f'endpoint=~"{API_PREFIX}.*"'
RECOMMENDATIONS = f'endpoint="{RECOMMENDATIONS_ENDPOINT}"'

# Recorded series (level:metric:operation, Prometheus' naming convention): the alerts and the
# Grafana dashboard read these, so both show the same numbers.
P50, P95, P99 = (f"recforge:request_latency_seconds:p{q}_5m" for q in (50, 95, 99))
P99_BASELINE = "recforge:request_latency_seconds:p99_5m:median_1d"
THROUGHPUT = "recforge:requests:rate5m"
ERROR_RATIO = "recforge:request_errors:ratio_5m"
FALLBACK_RATIO = "recforge:fallback_answers:ratio_15m"


def _quantile(q: float) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({LATENCY}_bucket{{{API}}}[5m])))"


def recording_rules() -> list[dict]:
    return [
        {"record": P50, "expr": _quantile(0.5)},
        {"record": P95, "expr": _quantile(0.95)},
        {"record": P99, "expr": _quantile(0.99)},
        # "Its baseline": the median of the p99 over the day before the last hour, so a slow drift
        # upwards becomes the new normal only after a day, and a sudden doubling fires.
        {"record": P99_BASELINE, "expr": f"quantile_over_time(0.5, {P99}[1d] offset 1h)"},
        {"record": THROUGHPUT, "expr": f"sum(rate({REQUESTS}{{{API}}}[5m]))"},
        {
            "record": ERROR_RATIO,
            "expr": f'sum(rate({REQUESTS}{{{API},status=~"5.."}}[5m])) / {THROUGHPUT}',
        },
        {
            "record": FALLBACK_RATIO,
            "expr": f"sum(rate({FALLBACKS}[15m])) / sum(rate({REQUESTS}{{{RECOMMENDATIONS}}}[15m]))",
        },
    ]


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, "service": "recforge-serving"},
        "annotations": {"summary": summary, "description": description},
    }


def alerting_rules(settings: Settings) -> list[dict]:
    p99_ms = settings.slo_serving_p99_seconds * 1000
    factor = settings.slo_latency_regression_factor
    age_seconds = settings.slo_publication_age_hours * 3600
    return [
        _alert(
            "RecforgeServingDown", f'up{{job="{SERVING_JOB}"}} == 0', "2m", "page",
            "the recforge API does not answer Prometheus' scrapes",
            "{{ $labels.instance }} has been unreachable for 2 minutes.",
        ),
        _alert(
            "RecforgeLatencyAboveObjective", f"{P99} > {settings.slo_serving_p99_seconds}", "10m", "page",
            f"serving p99 latency above its objective of {p99_ms:g} ms",
            "p99 over 5 minutes is {{ $value | humanizeDuration }} (RECFORGE_SLO_SERVING_P99_SECONDS).",
        ),
        _alert(
            "RecforgeLatencyRegression", f"{P99} > {factor} * {P99_BASELINE}", "10m", "ticket",
            f"serving p99 latency at more than {factor:g}x its usual level",
            "p99 over 5 minutes is {{ $value | humanizeDuration }}, against a median of the previous day "
            f"(RECFORGE_SLO_LATENCY_REGRESSION_FACTOR={factor:g}).",
        ),
        _alert(
            "RecforgeErrorRateHigh", f"{ERROR_RATIO} > {settings.slo_error_rate}", "5m", "page",
            f"more than {settings.slo_error_rate:.2%} of API answers are server errors",
            "{{ $value | humanizePercentage }} of answers over 5 minutes were 5xx (RECFORGE_SLO_ERROR_RATE).",
        ),
        _alert(
            "RecforgePublicationStale", f"max({PUBLICATION_AGE}) > {age_seconds:g}", "5m",
            "ticket",
            f"the live publication is older than {settings.slo_publication_age_hours:g} hours",
            "the lists served are {{ $value | humanizeDuration }} old: recforge_publish has not made a new "
            "version live (RECFORGE_SLO_PUBLICATION_AGE_HOURS).",
        ),
        _alert(
            "RecforgeNoLivePublication",
            f'up{{job="{SERVING_JOB}"}} == 1 unless on (instance) {LIVE_PUBLICATION}', "5m", "page",
            "the recforge API is up with no publication live",
            "{{ $labels.instance }} answers 503 to every recommendation request: no publication has loaded.",
        ),
        _alert(
            "RecforgeFallbackShareHigh", f"{FALLBACK_RATIO} > {settings.slo_fallback_share}", "15m", "ticket",
            f"more than {settings.slo_fallback_share:.0%} of recommendation answers come from the fallback",
            "{{ $value | humanizePercentage }} of users asking were unknown to the live publication "
            "(RECFORGE_SLO_FALLBACK_SHARE): is the publication behind the user base?",
        ),
    ]  # fmt: skip


def render(settings: Settings) -> str:
    groups = {
        "groups": [
            {"name": "recforge-serving-recorded", "interval": "30s", "rules": recording_rules()},
            {"name": "recforge-serving-alerts", "interval": "30s", "rules": alerting_rules(settings)},
        ]
    }
    header = (
        "# Generated by `recforge alert-rules` from the slo_* settings (pipelines/operations/alert_rules.py);\n"
        "# edit the settings, not this file. Tested by deploy/prometheus/rules_test.yml (promtool test rules).\n"
    )
    return header + yaml.safe_dump(groups, sort_keys=False, width=200)


def write_rules(settings: Settings, output: Path = RULES_FILE) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(settings))
    return output
