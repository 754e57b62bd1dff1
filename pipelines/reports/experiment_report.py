"""reports/experiments/<name>.html: one experiment's readout, for whoever decides the launch.

The decision and its reasons first, then the sample-ratio check, each arm's metrics with their
intervals, each comparison with its always-valid confidence sequence and p-value, and two plots: the
metrics per arm, and the always-valid p-value of the primary metric by daily look (it can only fall,
so a look never undoes an earlier one). When the SRM check fails the effects are withheld. Plots are
embedded PNGs: the page works offline.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipelines.experiments.contract import METRICS
from pipelines.experiments.stats import KEEP_RUNNING, SHIP
from pipelines.reports import html
from pipelines.reports.index import write_index
from pipelines.settings import Settings


def _number(value: float, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.4f}" if metric != "revenue_per_impression" else f"{value:.3f}"


def _metrics_plot(readout) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = readout.analysis.arms
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.2))
    for ax, metric in zip(axes, METRICS, strict=True):
        values = [a.metrics[metric].value if metric in a.metrics else math.nan for a in arms]
        errors = [(a.metrics[metric].high - a.metrics[metric].value) if metric in a.metrics else 0 for a in arms]
        errors = [e if math.isfinite(e) else 0 for e in errors]
        ax.errorbar(range(len(arms)), values, yerr=errors, fmt="o", capsize=6, color="#2563eb")
        ax.set_xticks(range(len(arms)), [a.arm for a in arms])
        ax.set_title(f"{metric} (95% CI per arm)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return html.figure_img(fig, "metrics per arm with confidence intervals")


def _p_value_plot(readout, alpha: float) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    primary = readout.analysis.primary_metric
    for c in readout.analysis.comparisons:
        if c.metric == primary and c.p_by_look:
            ax.plot(range(1, len(c.p_by_look) + 1), c.p_by_look, marker="o", label=f"{c.arm} vs {c.reference}")
    ax.axhline(alpha, color="#b42318", linestyle="--", label=f"alpha {alpha:g}")
    ax.set_yscale("log")
    ax.set_xlabel("daily look")
    ax.set_ylabel(f"always-valid p ({primary})")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    ax.grid(alpha=0.3)
    return html.figure_img(fig, "always-valid p-value by daily look")


def render(experiment, readout, settings: Settings) -> str:
    analysis = readout.analysis
    css = {SHIP: "ok", KEEP_RUNNING: "warn"}.get(analysis.decision, "bad")
    body = f"<h2>Decision: <span class='{css}'>{html.escape(analysis.decision)}</span></h2><ul>"
    body += "".join(f"<li>{html.escape(r)}</li>" for r in analysis.reasons) + "</ul>"
    body += "<h2>Declaration</h2>" + html.table(
        ["arm", "source", "declared share"],
        [[v.name, v.source, f"{v.share:.0%}"] for v in experiment.variants]
        + ([["holdback", "popularity fallback", f"{experiment.holdback:.0%}"]] if experiment.holdback else [])
        + [[v.name, f"{v.source} (shadow: logged, never shown)", "-"] for v in experiment.shadow],
    )
    body += (
        f"<p>{experiment.start:%Y-%m-%d %H:%M} to {experiment.end:%Y-%m-%d %H:%M} UTC; primary metric "
        f"<code>{html.escape(experiment.primary_metric)}</code>; guardrails: "
        + (", ".join(f"{g.metric} may not drop more than {g.max_drop:.0%}" for g in experiment.guardrails) or "none")
        + f"; declared in <code>{html.escape(experiment.source)}</code>.</p>"
    )
    srm = analysis.srm
    body += "<h2>Sample ratio</h2>" + html.table(
        ["arm", "users", "expected"], [[a, srm.users.get(a, 0), f"{e:.0f}"] for a, e in srm.expected.items()]
    )
    body += (
        f"<p>chi-square {srm.chi2:.2f}, p = {srm.p_value:.3g}: "
        + html.status(srm.passed, "assignment as declared", f"mismatch (below {srm.alpha:g}): effects withheld")
        + "</p>"
    )
    if readout.notes:
        body += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in readout.notes) + "</ul>"
    if analysis.blocked:
        return html.page(f"Experiment {experiment.name}", f"read out {readout.as_of:%Y-%m-%d %H:%M} UTC", body)
    body += "<h2>Arms</h2><p>Ratios of per-user sums; 95% intervals by the delta method over users.</p>"
    rows = []
    for a in analysis.arms:
        row = [a.arm, a.users, a.impressions]
        for metric in METRICS:
            e = a.metrics.get(metric)
            row.append(
                "-"
                if e is None
                else f"{_number(e.value, metric)} [{_number(e.low, metric)}, {_number(e.high, metric)}]"
            )
        rows.append(row)
    body += html.table(["arm", "users", "impressions", *METRICS], rows)
    body += _metrics_plot(readout)
    body += (
        f"<h2>Comparisons with {html.escape(analysis.reference)}</h2><p>Always-valid (mSPRT) p-values and "
        f"{1 - settings.experiment_alpha:.0%} confidence sequences over {analysis.looks} daily looks, "
        "CUPED-adjusted when a pre-period exists; Holm-adjusted on the primary metric over the challengers.</p>"
    )
    rows = [
        [
            c.arm, c.metric, f"{c.relative:+.2%}" if math.isfinite(c.relative) else "-",
            f"{_number(c.delta, c.metric)} [{_number(c.low, c.metric)}, {_number(c.high, c.metric)}]",
            f"{c.p_value:.3g}", f"{c.p_adjusted:.3g}", f"{c.variance_reduction:.0%}",
        ]
        for c in analysis.comparisons
    ]  # fmt: skip
    body += html.table(
        ["arm", "metric", "lift", "difference [sequence]", "p", "p adjusted", "CUPED variance cut"], rows
    )
    body += _p_value_plot(readout, settings.experiment_alpha)
    return html.page(f"Experiment {experiment.name}", f"read out {readout.as_of:%Y-%m-%d %H:%M} UTC", body)


def write_experiment_report(settings: Settings, experiment, readout) -> Path:
    """Write the page and rewrite reports/index.html, which lists every experiment page."""
    path = settings.reports_dir / "experiments" / f"{experiment.name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(experiment, readout, settings))
    write_index(settings)
    return path
