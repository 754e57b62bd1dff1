"""The drift report: one HTML page per check, with the measures and the distributions behind them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipelines.monitoring.drift_measures import activity_bin_labels
from pipelines.reports import html
from pipelines.settings import Settings


def _plots(baseline, current) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    x = np.arange(len(current.event_types))
    axes[0].bar(x - 0.2, baseline.event_types.to_numpy(), 0.4, label="baseline")
    axes[0].bar(x + 0.2, current.event_types.to_numpy(), 0.4, label="current")
    axes[0].set_xticks(x, current.event_types.index, rotation=20)
    axes[0].set_title("event-type mix (share)")
    axes[0].legend()

    for window, label in ((baseline, "baseline"), (current, "current")):
        shares = np.sort(window.items.to_numpy(float))[::-1]
        axes[1].plot(np.arange(1, len(shares) + 1), shares / max(shares.sum(), 1), label=label)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_title("item popularity (share by rank)")
    axes[1].legend()

    labels = activity_bin_labels()
    x = np.arange(len(labels))
    axes[2].bar(x - 0.2, baseline.activity, 0.4, label="baseline")
    axes[2].bar(x + 0.2, current.activity, 0.4, label="current")
    axes[2].set_xticks(x, labels, rotation=30)
    axes[2].set_title("user activity (events per user)")
    axes[2].legend()
    return html.figure_img(fig, "baseline and current distributions")


def write_drift_report(settings: Settings, result, baseline, current) -> Path:
    directory = settings.reports_dir / "drift"
    directory.mkdir(parents=True, exist_ok=True)
    verdict = html.status(not result.retrain, good="no retraining needed", bad="retraining triggered")
    body = f"<p>{verdict}: {html.escape(result.reason)}</p>"
    body += html.table(
        ["window", "from", "to"],
        [
            ["current", f"{result.window_start:%Y-%m-%d %H:%M}", f"{result.window_end:%Y-%m-%d %H:%M}"],
            [
                "baseline",
                f"{result.baseline_start:%Y-%m-%d %H:%M}" if result.baseline_start else "-",
                f"{result.baseline_end:%Y-%m-%d %H:%M}" if result.baseline_end else "-",
            ],
        ],
    )
    if result.measures:
        body += "<h2>Measures</h2>" + html.table(
            ["measure", "method", "value", "threshold", "status"],
            [
                [m.name, m.method, f"{m.value:.4f}", m.threshold, html.status(not m.drifted, bad="drifted")]
                for m in result.measures
            ],
            raw_columns=frozenset({4}),
        )
        body += "<h2>Distributions</h2>" + _plots(baseline, current)
    name = f"drift-{result.window_end:%Y%m%dT%H%M%S}.html"
    path = directory / name
    path.write_text(html.page("recforge drift report", f"checked {result.checked_at:%Y-%m-%d %H:%M} UTC", body))
    shutil.copyfile(path, directory / "latest.html")
    return path
