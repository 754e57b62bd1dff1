"""The evaluation report of one training: every candidate's held-out metrics and the gate's decision."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from pipelines import html
from pipelines.settings import Settings


def write_evaluation_report(
    settings: Settings, metrics: dict[str, dict[str, float]], decision: str, tags: dict[str, str]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    columns = sorted({key for values in metrics.values() for key in values})
    rows = [[name, *(f"{metrics[name].get(c, float('nan')):.4f}" for c in columns)] for name in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for axis, metric in zip(axes, (f"ndcg_at_{settings.eval_k}", f"recall_at_{settings.recall_k}"), strict=True):
        axis.bar(names, [metrics[n].get(metric, 0.0) for n in names], color="#3e7cb1")
        axis.set_title(metric)
    body = html.table(["tag", "value"], [[k, v] for k, v in sorted(tags.items())])
    body += "<h2>Held-out metrics</h2>" + html.table(["model", *columns], rows)
    body += html.figure_img(fig, "metrics by model")
    body += f"<h2>Promotion gate</h2><p>{html.escape(decision)}</p>"

    directory = settings.reports_dir / "evaluation"
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = directory / f"evaluation-{now:%Y%m%dT%H%M%S}.html"
    path.write_text(html.page("recforge evaluation report", f"training of {now:%Y-%m-%d %H:%M} UTC", body))
    shutil.copyfile(path, directory / "latest.html")
    return path
