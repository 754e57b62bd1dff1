"""The evaluation report: every model's backtest, by segment and on new items, long-tail exposure, the gate.

One self-contained HTML file per training or ``recforge evaluate`` (plots embedded), written to
``reports/evaluation/`` with a ``latest.html`` copy that ``reports/index.html`` links, and logged to
MLflow by the caller. Numbers are "mean +- std over folds" after publication's business rules unless
a table says "raw".
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.evaluation import SEGMENTS
from models.evaluation.evaluate import LONG_TAIL_BINS, item_popularity
from models.metrics import SE_SUFFIX, at, in_segment
from pipelines.reports import html
from pipelines.settings import Settings

COLORS = ["#3e7cb1", "#f0a202", "#6a994e", "#bc4749", "#8e7dbe", "#5c677d", "#e07a5f", "#2a9d8f"]


def _cell(summary: dict[str, float], key: str) -> str:
    if key not in summary:
        return "-"
    error = f" (SE {summary[key + SE_SUFFIX]:.4f})" if key + SE_SUFFIX in summary else ""
    return f"{summary[key]:.4f} ± {summary.get(key + '_std', 0.0):.4f}{error}"


def _test_users(fold) -> str:
    """A fold's scored test users, and how many it had when it scored a sample of them."""
    return (
        f"{fold.n_eval_users} of {fold.population_users} (seeded sample)"
        if fold.population_users
        else str(fold.n_eval_users)
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_figure(summaries: dict[str, dict[str, float]], metrics: list[str]):
    """Small multiples: one bar chart per metric, a bar per model with its std over folds as error bar."""
    plt = _plt()
    names = list(summaries)
    columns = 3
    rows = int(np.ceil(len(metrics) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.6 * rows), squeeze=False)
    for axis, metric in zip(axes.ravel(), metrics, strict=False):
        means = [summaries[n].get(metric, 0.0) for n in names]
        stds = [summaries[n].get(metric + "_std", 0.0) for n in names]
        axis.bar(names, means, yerr=stds, capsize=3, color=COLORS[: len(names)])
        axis.set_title(metric, fontsize=9)
        axis.tick_params(axis="x", labelsize=8, rotation=20)
    for axis in axes.ravel()[len(metrics) :]:
        axis.axis("off")
    fig.tight_layout()
    return fig


def segment_figure(summaries: dict[str, dict[str, float]], metric: str):
    """Grouped bars: the metric per segment (and on new items), one bar per model."""
    plt = _plt()
    groups = [*SEGMENTS, "new_items"]
    keys = [in_segment(s, metric) for s in SEGMENTS] + [f"new_items.{metric}"]
    names = list(summaries)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    fig, axis = plt.subplots(figsize=(9, 3.2))
    for i, name in enumerate(names):
        means = [summaries[name].get(key, 0.0) for key in keys]
        stds = [summaries[name].get(key + "_std", 0.0) for key in keys]
        axis.bar(x + i * width, means, width, yerr=stds, capsize=2, label=name, color=COLORS[i % len(COLORS)])
    axis.set_xticks(x + width * (len(names) - 1) / 2, groups)
    axis.set_title(f"{metric} by user segment and on new items")
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def long_tail_figure(exposures: dict[str, np.ndarray], reference: np.ndarray):
    """Share of top-k slots per item popularity decile, beside the share of training interactions."""
    plt = _plt()
    fig, axis = plt.subplots(figsize=(9, 3.2))
    deciles = np.arange(1, LONG_TAIL_BINS + 1)
    axis.plot(deciles, reference, "k--", marker="o", label="training interactions")
    for i, (name, shares) in enumerate(exposures.items()):
        axis.plot(deciles, shares, marker="o", label=name, color=COLORS[i % len(COLORS)])
    axis.set_xlabel("item popularity decile (1 = most popular tenth of the catalog)")
    axis.set_ylabel("share of top-k slots (k = eval_k)")
    axis.set_xticks(deciles)
    axis.set_title("long-tail exposure")
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def interaction_share_by_decile(popularity: np.ndarray) -> np.ndarray:
    order = np.argsort(-popularity, kind="stable")
    decile = np.empty(len(popularity), dtype=np.int64)
    decile[order] = np.arange(len(popularity)) * LONG_TAIL_BINS // max(len(popularity), 1)
    totals = np.bincount(decile, weights=popularity, minlength=LONG_TAIL_BINS)
    return totals / totals.sum() if totals.sum() else totals


def render_report(
    settings: Settings,
    run,
    tags: dict[str, str],
    best: str | None = None,
    decision=None,
    headline: str | None = None,
    champion_label: str | None = None,
) -> str:
    """The report body (HTML) for an ``EvaluationRun``; the gate section only when a decision is given."""
    k, metric = run.config.k, run.config.names
    summaries = run.summaries()
    names = list(summaries)
    accuracy, beyond = list(metric.accuracy), [*metric.beyond_accuracy, metric.new_item_exposure]
    overall = accuracy + beyond
    primary = metric.primary

    def label(name: str) -> str:
        marks = [m for m, on in (("best", name == best), ("champion", name == champion_label)) if on]
        return f"{name} ({', '.join(marks)})" if marks else name

    body = ""
    if headline:
        body += f"<h2>Decision</h2><p><strong>{html.escape(headline)}</strong></p>"
    body += html.table(["tag", "value"], [[key, value] for key, value in sorted(tags.items())])

    body += (
        "<h2>Folds</h2><p>Each model is fitted afresh on every fold's training data and scored on its test window.</p>"
    )
    body += html.table(
        [
            "fold",
            "strategy",
            "train users",
            "train items",
            "train pairs",
            "test users",
            "held-out pairs",
            "unknown items",
        ],
        [
            [
                f.name,
                f.strategy,
                f.train.n_users,
                f.train.n_items,
                f.train.matrix.nnz,
                _test_users(f),
                f.relevant.nnz,
                f.n_unknown_items,
            ]
            for f in run.data.folds
        ],
    )

    if run.failures:
        body += "<h2>Candidates that failed</h2><p>Left out of this evaluation; the error of each:</p>"
        body += html.table(["model", "error"], [[name, error] for name, error in run.failures.items()])
    if run.refusals:
        body += "<h2>Candidates the data cannot support</h2><p>Not fitted; the reason each model gave:</p>"
        body += html.table(["model", "reason"], [[name, reason] for name, reason in run.refusals.items()])
    body += (
        "<h2>Metrics by model</h2><p>Mean ± std over folds, after publication's business rules (seen, blocked and "
        f"out-of-stock items excluded, category cap on the top {run.config.rules.category_cap_head}; unknown users get "
        "the popularity fallback). SE: the standard error of that mean from the users scored (each fold scores at "
        f"most {settings.eval_max_users} of its test users, a seeded uniform sample when it has more).</p>"
    )
    body += html.table(
        ["model", "users per fold", *accuracy],
        [[label(n), f"{summaries[n]['n_eval_users']:.1f}", *(_cell(summaries[n], m) for m in accuracy)] for n in names],
    )
    body += html.table(["model", *beyond], [[label(n), *(_cell(summaries[n], m) for m in beyond)] for n in names])
    body += html.figure_img(metrics_figure(summaries, overall), "metrics by model")

    body += "<h2>Business rules: raw ranking vs served lists</h2>"
    raw_metrics = [primary, metric.recall, metric.coverage, at("diversity", k)]
    body += html.table(
        ["model", *(f"{m} raw" for m in raw_metrics), *(f"{m} served" for m in raw_metrics)],
        [
            [n, *(_cell(summaries[n], "raw." + m) for m in raw_metrics), *(_cell(summaries[n], m) for m in raw_metrics)]
            for n in names
        ],
    )

    body += (
        f"<h2>By segment and on new items</h2><p>Segments by distinct training items: cold &lt; "
        f"{run.config.segments.cold_below}, casual {run.config.segments.cold_below}-{run.config.segments.power_above}, "
        f"power &gt; {run.config.segments.power_above}. New items: first event within {settings.eval_new_item_days:g} "
        "days before the cutoff; their metrics count only held-out interactions with new items.</p>"
    )
    segment_metrics = [primary, metric.recall, at("hit_rate", k), metric.coverage, at("novelty", k)]
    segment_rows = []
    for n in names:
        for group in [*(in_segment(s, "") for s in SEGMENTS), "new_items."]:
            segment_rows.append(
                [
                    n,
                    group.strip(".").replace("segment.", ""),
                    f"{summaries[n].get(group + 'n_eval_users', 0.0):.1f}",
                    *(_cell(summaries[n], group + m) for m in segment_metrics),
                ]
            )
    body += html.table(["model", "group", "users per fold", *segment_metrics], segment_rows)
    body += html.figure_img(segment_figure(summaries, primary), "NDCG by segment")

    body += (
        f"<h2>Long-tail exposure</h2><p>Where the top-{k} slots go, by item popularity decile (training popularity of "
        "the newest fold), averaged over folds; the dashed line is how training interactions are spread.</p>"
    )
    reference = interaction_share_by_decile(item_popularity(run.data.folds[0]))
    exposures = {n: result.exposure("rules") for n, result in run.results.items()}
    body += html.figure_img(long_tail_figure(exposures, reference), "long-tail exposure")
    body += html.table(
        ["model", *(f"decile {d}" for d in range(1, LONG_TAIL_BINS + 1))],
        [["training interactions", *(f"{v:.3f}" for v in reference)]]
        + [[n, *(f"{v:.3f}" for v in shares)] for n, shares in exposures.items()],
    )

    body += f"<h2>{primary} per fold</h2>"
    fold_names = [f.name for f in run.data.folds]
    body += html.table(
        ["model", *fold_names],
        [[n, *(f"{run.results[n].per_fold(primary)[f]:.4f}" for f in fold_names)] for n in names],
    )

    if decision is not None:
        body += f"<h2>Promotion gate</h2><p>{html.escape(decision.reason())}</p>"
        if decision.checks:
            body += html.table(
                ["check", "metric", "challenger", "champion", "required", "rule", "result"],
                [
                    [
                        c.name,
                        c.metric,
                        f"{c.challenger:.4f} ± {c.challenger_std:.4f}",
                        f"{c.champion:.4f} ± {c.champion_std:.4f}",
                        f"{c.required:.4f}",
                        c.rule,
                        html.status(c.passed, good="pass", bad="fail"),
                    ]
                    for c in decision.checks
                ],
                frozenset({6}),
            )
    return body


def write_evaluation_report(
    settings: Settings,
    run,
    tags: dict[str, str],
    best: str | None = None,
    decision=None,
    headline: str | None = None,
    champion_label: str | None = None,
) -> Path:
    body = render_report(settings, run, tags, best, decision, headline, champion_label)
    directory = settings.reports_dir / "evaluation"
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = directory / f"evaluation-{now:%Y%m%dT%H%M%S%f}.html"
    kind = "training" if decision is not None else "evaluation"
    path.write_text(html.page("recforge evaluation report", f"{kind} of {now:%Y-%m-%d %H:%M} UTC", body))
    shutil.copyfile(path, directory / "latest.html")
    return path
