"""The bias audit: who the lists show and whom they serve well, written with every training and publication.

One page (``reports/audit/<training|publication>-<stamp>.html``, copied to ``<kind>-latest.html``,
linked from ``reports/index.html``; plots embedded, so it works offline) and the same numbers as
``audit.*`` metrics on the MLflow run:

- item exposure: Gini of the top-k slots over the allowed items and catalog coverage, with the
  Lorenz curve; the long tail's (bottom 80% by popularity) share of the slots beside its share of
  the interactions;
- exposure by category and by seller against each one's share of the allowed catalog (a data set
  without sellers, MovieLens, says so instead);
- Steck's calibration KL per user (category mix of the history against that of the list) by
  activity segment;
- training only, as publication has no held-out data: NDCG@k by segment with a confidence interval
  over users (normal approximation, ``audit_z``), and for each segment against the cold one, whether
  the gap changed from the champion's (a paired z-test on per-user differences, both models scored
  on the same users of the same fold; :func:`models.evaluation.exposure.gap_change`).

At training the lists are the best candidate's evaluation lists (after the list rules) on the
backtest's newest fold, and the champion's on the same fold; at publication they are the published
lists of every known user.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.evaluation.evaluate import FoldAudit
from models.evaluation.exposure import (
    LONG_TAIL_SHARE,
    exposure_counts,
    exposure_gini,
    gap_change,
    gini,
    group_exposure,
    long_tail_share,
    mean_ci,
    segment_means,
)
from models.evaluation.segments import SEGMENTS
from models.metrics import MetricNames, at, coverage_at_k, in_segment
from pipelines.reports import html
from pipelines.settings import Settings

log = logging.getLogger(__name__)

AUDIT_DIR = "audit"
PREFIX = "audit."
KINDS = ("training", "publication")
REFERENCE_SEGMENT = "cold"  # gaps are measured against the segment with least to go on
TOP_SELLERS = 15  # sellers shown by name in the table and plot; the rest are summed up


@dataclass
class AuditResult:
    """The audit's numbers (MLflow metric names without the ``audit.`` prefix) and its tables, for the page."""

    kind: str
    k: int
    metrics: dict[str, float] = field(default_factory=dict)
    categories: pd.DataFrame | None = None
    sellers: pd.DataFrame | None = None
    accuracy: pd.DataFrame | None = None
    gaps: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def mlflow_metrics(self) -> dict[str, float]:
        return {PREFIX + name: value for name, value in self.metrics.items() if np.isfinite(value)}


def metric_safe(name: str) -> str:
    """A category name as MLflow accepts it in a metric name (MovieLens has "Children's")."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


def group_table(audit: FoldAudit, names: np.ndarray, k: int, label: str) -> pd.DataFrame:
    """Per group: its share of the top-k slots, of the allowed catalog, and the ratio of the two."""
    known = names != ""
    codes = np.full(len(names), -1, dtype=np.int64)
    values = np.array([], dtype=str)
    if known.any():
        values, codes[known] = np.unique(names[known].astype(str), return_inverse=True)
    shares = group_exposure(audit.recommended, codes, k, audit.allowed)
    frame = pd.DataFrame(
        {label: values, "exposure_share": shares.exposure, "catalog_share": shares.catalog, "ratio": shares.ratio}
    )
    return frame.sort_values(["catalog_share", label], ascending=[False, True], ignore_index=True)


def audit_lists(
    audit: FoldAudit,
    kind: str,
    k: int,
    z: float = 1.96,
    reference: FoldAudit | None = None,
    reference_label: str | None = None,
) -> AuditResult:
    """Every number of the audit from one set of lists (and, at training, the champion's on the same users)."""
    names = MetricNames(k)
    result = AuditResult(kind, k)
    metrics = result.metrics
    metrics[names.exposure_gini] = exposure_gini(audit.recommended, k, audit.allowed)
    metrics[names.coverage] = coverage_at_k(audit.recommended, k, int(audit.allowed.sum()))
    shown, interactions = long_tail_share(audit.recommended, audit.popularity, k)
    metrics[names.long_tail_share] = shown
    metrics[at("long_tail_interaction_share", k)] = interactions
    finite = audit.calibration[np.isfinite(audit.calibration)]
    metrics[names.calibration_kl] = float(finite.mean()) if len(finite) else float("nan")
    for segment, value in segment_means(audit.calibration, audit.segments, SEGMENTS).items():
        metrics[in_segment(segment, names.calibration_kl)] = value
    result.categories = group_table(audit, audit.categories.astype(str), k, "category")
    for row in result.categories.itertuples():
        metrics[f"category.{metric_safe(row.category)}.exposure_ratio_at_{k}"] = float(row.ratio)
    if (audit.sellers != "").any():
        result.sellers = group_table(audit, audit.sellers, k, "seller")
        shares = result.sellers["exposure_share"].to_numpy()
        metrics[at("seller_exposure_gini", k)] = gini(shares)
        metrics[at("top_seller_exposure_share", k)] = float(shares.max(initial=0.0))
    else:
        result.notes.append(
            "The catalog names no seller or provider for its items (MovieLens has none), so there is no "
            "exposure by seller, and the seller cap has nothing to hold."
        )
    if kind == "training":
        _accuracy(result, audit, names, z, reference, reference_label)
    else:
        result.notes.append(
            "Publication has no held-out interactions, so accuracy by segment is audited at training "
            "(on the evaluation lists); this page audits exposure and calibration of what users are served."
        )
    return result


def _accuracy(result, audit, names, z, reference, reference_label) -> None:
    rows = []
    for segment in SEGMENTS:
        mask = audit.segments == segment
        ci = mean_ci(audit.ndcg[mask], z)
        result.metrics[in_segment(segment, names.primary)] = ci.mean
        result.metrics[in_segment(segment, names.primary + "_ci_low")] = ci.low
        result.metrics[in_segment(segment, names.primary + "_ci_high")] = ci.high
        row = {"segment": segment, "users": ci.n, "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high}
        if reference is not None:
            ref = mean_ci(reference.ndcg[mask], z)
            row.update({"champion_mean": ref.mean, "champion_ci_low": ref.low, "champion_ci_high": ref.high})
        rows.append(row)
    result.accuracy = pd.DataFrame(rows)
    if reference is None:
        result.notes.append("No champion yet (or its recipe could not be re-fitted): no gap test against it.")
        return
    if reference.ndcg.shape != audit.ndcg.shape:
        result.notes.append(f"The champion ({reference_label}) was scored on other users: no paired gap test.")
        return
    gaps = []
    for segment in SEGMENTS:
        if segment == REFERENCE_SEGMENT:
            continue
        test = gap_change(audit.ndcg, reference.ndcg, audit.segments, segment, REFERENCE_SEGMENT)
        key = f"gap.{segment}_minus_{REFERENCE_SEGMENT}.{names.primary}"
        result.metrics.update({f"{key}.change": test.change, f"{key}.z": test.z, f"{key}.p_value": test.p_value})
        gaps.append(
            {
                "gap": f"{segment} - {REFERENCE_SEGMENT}",
                "challenger": test.gap_new,
                "champion": test.gap_reference,
                "change": test.change,
                "z": test.z,
                "p_value": test.p_value,
                "users": f"{test.n_a} / {test.n_b}",
                "verdict": "changed" if test.significant() else "no evidence of a change",
            }
        )
    result.gaps = pd.DataFrame(gaps)


# --- the page


def _plots(audit: FoldAudit, result: AuditResult) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result.k
    images = []
    counts = np.sort(exposure_counts(audit.recommended, len(audit.allowed), k)[audit.allowed])
    fig, (lorenz, tail) = plt.subplots(1, 2, figsize=(10, 3.6))
    if counts.sum():
        share = np.concatenate([[0], np.cumsum(counts) / counts.sum()])
        lorenz.plot(np.linspace(0, 1, len(share)), share, label="lists")
    lorenz.plot([0, 1], [0, 1], linestyle="--", color="grey", label="equal exposure")
    lorenz.set(
        title=f"Lorenz curve of exposure (Gini {result.metrics[at('exposure_gini', k)]:.3f})",
        xlabel="share of allowed items (least shown first)",
        ylabel="share of slots",
    )
    lorenz.legend(loc="upper left")
    shown, interactions = result.metrics[at("long_tail_share", k)], result.metrics[at("long_tail_interaction_share", k)]
    tail.bar(["slots in the lists", "interactions"], [shown, interactions], color=["#3b82f6", "#9ca3af"])
    tail.set(title=f"Long tail (bottom {LONG_TAIL_SHARE:.0%} of items by popularity)", ylabel="share", ylim=(0, 1))
    images.append(html.figure_img(fig, "exposure Lorenz curve and long-tail share"))

    groups = [("category", result.categories)] + ([("seller", result.sellers)] if result.sellers is not None else [])
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups) + 1, 3.8), squeeze=False)
    for axis, (label, table) in zip(axes[0], groups, strict=True):
        shown_table = table.head(TOP_SELLERS)
        x = np.arange(len(shown_table))
        axis.bar(x - 0.2, shown_table["catalog_share"], 0.4, label="catalog share", color="#9ca3af")
        axis.bar(x + 0.2, shown_table["exposure_share"], 0.4, label="exposure share", color="#3b82f6")
        axis.set_xticks(x, shown_table[label], rotation=60, ha="right", fontsize=8)
        axis.set(title=f"Exposure by {label} vs catalog share", ylabel="share")
        axis.legend()
    images.append(html.figure_img(fig, "exposure by category and seller"))

    fig, (calibration, accuracy) = plt.subplots(1, 2, figsize=(10, 3.6))
    data = [audit.calibration[(audit.segments == s) & np.isfinite(audit.calibration)] for s in SEGMENTS]
    if any(len(d) for d in data):
        calibration.boxplot([d if len(d) else [np.nan] for d in data], tick_labels=list(SEGMENTS), showfliers=False)
    calibration.set(title="Calibration KL per user by segment (lower is better)", ylabel="KL (nats)")
    if result.accuracy is not None:
        table = result.accuracy
        x = np.arange(len(table))
        errors = [table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]]
        accuracy.errorbar(x - 0.1, table["mean"], yerr=np.nan_to_num(errors), fmt="o", capsize=4, label="challenger")
        if "champion_mean" in table:
            champion = [
                table["champion_mean"] - table["champion_ci_low"],
                table["champion_ci_high"] - table["champion_mean"],
            ]
            accuracy.errorbar(
                x + 0.1, table["champion_mean"], yerr=np.nan_to_num(champion), fmt="s", capsize=4, label="champion"
            )
        accuracy.set_xticks(x, table["segment"])
        accuracy.set(title=f"NDCG@{k} by segment with confidence intervals", ylabel=f"NDCG@{k}")
        accuracy.legend()
    else:
        accuracy.axis("off")
        accuracy.text(0.5, 0.5, "no held-out data at publication:\naccuracy is audited at training", ha="center")
    images.append(html.figure_img(fig, "calibration and accuracy by segment"))
    return images


def _frame_table(frame: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4f}" if np.isfinite(value) else "-"
        return value

    return html.table(list(frame.columns), [[cell(v) for v in row] for row in frame.itertuples(index=False)])


def render_audit(audit: FoldAudit, result: AuditResult, context: dict[str, str]) -> str:
    """The page's body: facts, notes, headline numbers, the plots, then the tables."""
    k = result.k
    m = {name: (f"{value:.4f}" if np.isfinite(value) else "- (no users)") for name, value in result.metrics.items()}
    body = html.table(["fact", "value"], [[key, value] for key, value in context.items()])
    body += "".join(f"<p class='warn'>{html.escape(note)}</p>" for note in result.notes)
    headline = [
        ["exposure Gini (allowed items)", m[at("exposure_gini", k)]],
        ["catalog coverage", m[at("coverage", k)]],
        ["long-tail share of slots", m[at("long_tail_share", k)]],
        ["long-tail share of interactions", m[at("long_tail_interaction_share", k)]],
        ["calibration KL (mean over users)", m[at("calibration_kl", k)]],
        *([f"calibration KL, {s} users", m[in_segment(s, at("calibration_kl", k))]] for s in SEGMENTS),
    ]
    body += f"<h2>Headline (top {k})</h2>" + html.table(["measure", "value"], headline)
    body += "<h2>Plots</h2>" + "".join(_plots(audit, result))
    if result.accuracy is not None:
        body += f"<h2>NDCG@{k} by segment</h2>" + _frame_table(result.accuracy)
    if result.gaps is not None:
        body += (
            "<h2>Did a segment gap change from the champion?</h2><p>Paired z-test: both models on the same "
            "users; change = the gap's change, from per-user differences (p below 0.05: changed).</p>"
            + _frame_table(result.gaps)
        )
    body += "<h2>Exposure by category</h2>" + _frame_table(result.categories)
    if result.sellers is not None:
        sellers = result.sellers
        if len(sellers) > TOP_SELLERS:
            rest = sellers.iloc[TOP_SELLERS:]
            others = {
                "seller": f"{len(rest)} others",
                "exposure_share": float(rest["exposure_share"].sum()),
                "catalog_share": float(rest["catalog_share"].sum()),
            }
            others["ratio"] = others["exposure_share"] / others["catalog_share"] if others["catalog_share"] else 0.0
            sellers = pd.concat([sellers.head(TOP_SELLERS), pd.DataFrame([others])], ignore_index=True)
        body += "<h2>Exposure by seller</h2>" + _frame_table(sellers)
    return body


def write_audit(settings: Settings, audit: FoldAudit, result: AuditResult, context: dict[str, str]) -> Path:
    """Write the page (and its numbers as JSON beside it) under reports/audit/, and copy it to <kind>-latest.html."""
    directory = settings.reports_dir / AUDIT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = directory / f"{result.kind}-{now:%Y%m%dT%H%M%S%f}.html"
    title = f"recforge bias audit ({result.kind})"
    path.write_text(html.page(title, f"written {now:%Y-%m-%d %H:%M} UTC", render_audit(audit, result, context)))
    shutil.copyfile(path, directory / f"{result.kind}-latest.html")
    path.with_suffix(".json").write_text(json.dumps({"context": context, "metrics": result.metrics}, indent=2) + "\n")
    log.info(
        "bias audit (%s): exposure Gini %.4f, long tail %.4f of slots vs %.4f of interactions, "
        "calibration KL %.4f -> %s",
        result.kind,
        result.metrics[at("exposure_gini", result.k)],
        result.metrics[at("long_tail_share", result.k)],
        result.metrics[at("long_tail_interaction_share", result.k)],
        result.metrics[at("calibration_kl", result.k)],
        path,
    )
    return path


# --- the two stages that write one


def audit_training(settings: Settings, run, best: str, champion_label: str | None, tags: dict[str, str]) -> Path:
    """At training, on the active MLflow run: the best candidate's lists on the newest fold against the champion's."""
    import mlflow

    newest = run.results[best].folds[0]
    reference = None
    if champion_label is not None and champion_label in run.results:
        reference = run.results[champion_label].folds[0].audit
    result = audit_lists(newest.audit, "training", run.config.k, settings.audit_z, reference, champion_label)
    context = {
        "lists": f"{best}'s evaluation lists after the list rules, fold {newest.fold}",
        "compared with": champion_label or "no champion",
        "data snapshot": tags.get("data_snapshot", "?"),
        "rules": ", ".join(run.config.rules.manifest()["applied"]),
    }
    path = write_audit(settings, newest.audit, result, context)
    mlflow.log_metrics(result.mlflow_metrics())
    mlflow.log_artifact(str(path), artifact_path="reports/audit")
    return path


def publication_audit_input(model, items: pd.DataFrame, recommended: np.ndarray, settings: Settings) -> FoldAudit:
    """The published lists in the form the audit reads.

    `recommended` holds the top ``eval_k`` item indices of every model user (-1 = no item; a user
    left out of the publication has a row of -1), as the publisher fills it in batch by batch.
    """
    from models.evaluation.exposure import calibration_kl
    from models.evaluation.segments import SegmentBounds
    from models.lists.rules import allowed_and_categories, catalog_status
    from models.popularity import distinct_users_per_item

    k = settings.eval_k
    if recommended.shape != (len(model.user_ids), k):
        raise ValueError(f"the audit needs {len(model.user_ids)} users x eval_k={k} items, got {recommended.shape}")
    allowed, codes = allowed_and_categories(model.item_ids, items)
    _, category_names = catalog_status(model.item_ids, items)
    sellers = np.full(len(model.item_ids), "", dtype=object)
    if "seller" in items.columns:
        sellers = items.set_index("item_id").reindex(model.item_ids)["seller"].fillna("").astype(str).to_numpy(object)
    seen = model.seen.tocsr()
    bounds = SegmentBounds(settings.cold_user_below, settings.segment_power_above)
    return FoldAudit(
        recommended=recommended,
        ndcg=np.full(len(model.user_ids), np.nan),
        calibration=calibration_kl(recommended, seen, codes, k),
        segments=bounds.label(np.diff(seen.indptr)),
        popularity=distinct_users_per_item(seen).astype(np.float64),
        allowed=allowed,
        categories=category_names,
        sellers=sellers,
    )


def audit_publication(settings: Settings, audit: FoldAudit, facts: dict, version: str, rules: list[str]) -> Path:
    """At publication: the page, and the numbers on the champion's MLflow run as ``audit.published.*``."""
    from mlflow import MlflowClient

    from pipelines.training.tracking import configure

    result = audit_lists(audit, "publication", settings.eval_k, settings.audit_z)
    context = {
        "lists": f"published lists of publication {version}",
        "model": f"{facts.get('registered_model')} v{facts.get('version')} ({facts.get('algorithm')})",
        "data snapshot": str(facts.get("data_snapshot")),
        "rules": ", ".join(rules),
    }
    path = write_audit(settings, audit, result, context)
    configure(settings)
    client = MlflowClient()
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    for name, value in result.mlflow_metrics().items():
        client.log_metric(facts["run_id"], name.replace(PREFIX, PREFIX + "published.", 1), value, timestamp=stamp)
    client.log_artifact(facts["run_id"], str(path), artifact_path="reports/audit")
    return path
