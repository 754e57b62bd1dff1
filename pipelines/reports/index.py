"""reports/index.html: the one page analysts open. It links the latest Data Docs, drift,
evaluation and dbt docs, each with its date and status, and is rewritten whenever one changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipelines.reports import html
from pipelines.reports.bias_audit import AUDIT_DIR
from pipelines.reports.bias_audit import KINDS as AUDIT_KINDS
from pipelines.reports.diagnosis_report import list_diagnoses
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect

CHECKPOINTS = ("raw_batch", "marts", "publication")
HEALTH_REPORT = Path("health") / "weekly.html"  # below reports/; written by pipelines/reports/health_report.py
EXPERIMENTS_DIR = Path("experiments")  # below reports/: <name>.json + <name>.html (pipelines/experiments/readout.py)


def _modified(path: Path) -> str:
    return f"{datetime.fromtimestamp(path.stat().st_mtime, UTC):%Y-%m-%d %H:%M} UTC" if path.exists() else "-"


def _link(root: Path, target: Path, label: str) -> str:
    if not target.exists():
        return f"<span class='none'>{html.escape(label)} (not yet written)</span>"
    return f"<a href='{html.escape(target.relative_to(root).as_posix())}'>{html.escape(label)}</a>"


def stored_report(settings: Settings, stored: str) -> Path:
    """The file a report path stored in the warehouse names, in this home.

    Paths are stored relative to ``reports/``; rows written before that hold absolute paths, which
    a copied or moved home rebases by their part below the last ``reports`` folder.
    """
    path = Path(stored)
    if not path.is_absolute():
        return settings.reports_dir / path
    if path.is_relative_to(settings.reports_dir):
        return path
    parts = path.parts
    name = settings.reports_dir.name
    below = len(parts) - parts[::-1].index(name) if name in parts else len(parts) - 1
    return settings.reports_dir.joinpath(*parts[below:])


def _validation_rows(settings: Settings) -> list[list[str]]:
    """The latest run of each checkpoint (its suites share one timestamp), linking each suite's result page.

    Result pages are static HTML; they and the Data Docs index, which lists every result, load their
    scripts and styles from copies shipped with recforge, so they work offline (offline_docs.py).
    """
    with connect(settings) as con:
        runs = con.execute(
            """
            with runs as (select split_part(suite, '.', 1) as checkpoint, * from monitoring.validation_runs),
            latest as (select checkpoint, max(validated_at) as validated_at from runs group by checkpoint)
            select checkpoint, validated_at, batch, split_part(suite, '.', 2), passed,
                   cast(failed_critical as varchar), cast(failed_warning as varchar), docs_page
            from runs join latest using (checkpoint, validated_at)
            order by checkpoint, suite
            """
        ).fetchall()
    rows = []
    for checkpoint in CHECKPOINTS:
        suites = [r for r in runs if r[0] == checkpoint]
        if not suites:
            rows.append([checkpoint, "-", "-", html.status(None), "-"])
            continue
        links = []
        for _, _, _, suite, _, critical, warning, page in suites:
            css = "bad" if critical not in (None, "[]") else "warn" if warning not in (None, "[]") else "ok"
            label = f"<span class='{css}'>{html.escape(suite)}</span>"
            links.append(f"<a href='{html.escape(page)}'>{label}</a>" if page else label)
        passed = all(r[4] for r in suites)
        warned = any(r[6] not in (None, "[]") for r in suites)
        status = (
            "<span class='warn'>passed with warnings</span>" if passed and warned else html.status(passed, "passed")
        )
        rows.append([checkpoint, f"{suites[0][1]:%Y-%m-%d %H:%M} UTC", suites[0][2], status, " &middot; ".join(links)])
    return rows


def _drift_rows(settings: Settings) -> list[list[str]]:
    with connect(settings) as con:
        checks = con.execute(
            "select checked_at, window_end, bool_or(retrain_triggered), max(report), "
            "string_agg(case when drifted then measure end, ', ') from monitoring.drift_results "
            "group by checked_at, window_end order by checked_at desc limit 10"
        ).fetchall()
    rows = []
    for checked_at, window_end, retrain, report, drifted in checks:
        link = _link(settings.reports_dir, stored_report(settings, report), Path(report).name) if report else "-"
        verdict = html.status(not retrain, good="quiet", bad=f"retrain ({drifted or 'no baseline'})")
        rows.append([f"{checked_at:%Y-%m-%d %H:%M} UTC", f"{window_end:%Y-%m-%d %H:%M}", verdict, link])
    return rows


def _experiment_rows(settings: Settings) -> list[list[str]]:
    """One row per experiment read out (its JSON record beside its page), newest first; unreadable ones named."""
    import json

    folder = settings.reports_dir / EXPERIMENTS_DIR
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.exists() else []
    rows = []
    for record in records:
        page = record.with_suffix(".html")
        try:
            data = json.loads(record.read_text())
            decision, as_of, reason = data["decision"], data["as_of"][:16].replace("T", " "), data["reasons"][0]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            decision, as_of, reason = "unreadable record", "-", str(record.name)
        css = {"ship": "ok", "keep running": "warn"}.get(decision, "bad")
        rows.append(
            [_link(settings.reports_dir, page, record.stem), f"<span class='{css}'>{html.escape(decision)}</span>",
             html.escape(reason), f"{as_of} UTC"]
        )  # fmt: skip
    return rows


def write_index(settings: Settings) -> Path:
    root = settings.reports_dir
    root.mkdir(parents=True, exist_ok=True)
    data_docs = root / "data_docs" / "index.html"
    drift = root / "drift" / "latest.html"
    evaluation = root / "evaluation" / "latest.html"
    dbt_docs = root / "dbt_docs" / "index.html"
    health = root / HEALTH_REPORT

    body = "<h2>Weekly health</h2>"
    body += f"<p>{_link(root, health, 'weekly health report')} &middot; updated {_modified(health)}</p>"
    body += "<h2>Data validation (Great Expectations)</h2>"
    body += f"<p>{_link(root, data_docs, 'Data Docs')} &middot; updated {_modified(data_docs)}</p>"
    body += html.table(
        ["checkpoint", "last run", "batch", "status", "suites (result pages)"],
        _validation_rows(settings),
        frozenset({3, 4}),
    )
    body += "<h2>Drift</h2>"
    body += f"<p>{_link(root, drift, 'latest drift report')} &middot; updated {_modified(drift)}</p>"
    drift_rows = _drift_rows(settings)
    if drift_rows:
        body += html.table(["checked", "window end", "verdict", "report"], drift_rows, frozenset({2, 3}))
    body += "<h2>Model evaluation</h2>"
    body += f"<p>{_link(root, evaluation, 'latest evaluation report')} &middot; updated {_modified(evaluation)}</p>"
    body += "<h2>Bias audit</h2><p>"
    body += " &middot; ".join(
        f"{_link(root, root / AUDIT_DIR / f'{kind}-latest.html', f'latest {kind} audit')} "
        f"(updated {_modified(root / AUDIT_DIR / f'{kind}-latest.html')})"
        for kind in AUDIT_KINDS
    )
    body += "</p>"
    body += "<h2>Experiments</h2>"
    experiments = _experiment_rows(settings)
    if experiments:
        body += html.table(["experiment", "decision", "first reason", "read out"], experiments, frozenset({0, 1, 2}))
    else:
        body += "<p class='none'>None read out yet: <code>recforge experiments readout NAME</code> writes one.</p>"
    body += "<h2>User diagnoses</h2>"
    diagnoses = list_diagnoses(settings)
    if diagnoses:
        rows = [
            [_link(root, d.page, d.user_id), d.outcome, d.explanation, d.written_at[:16].replace("T", " ") + " UTC"]
            for d in diagnoses
        ]
        body += html.table(["user", "diagnosis", "why", "written"], rows, frozenset({0}))
    else:
        body += "<p class='none'>None yet: <code>recforge diagnose USER</code> writes one.</p>"
    privacy = root / "privacy" / "index.html"
    if privacy.exists():
        body += "<h2>Privacy</h2>"
        body += f"<p>{_link(root, privacy, 'forget requests (audit)')} &middot; updated {_modified(privacy)}</p>"
    body += "<h2>Warehouse documentation (dbt docs)</h2>"
    body += f"<p>{_link(root, dbt_docs, 'dbt docs')} &middot; generated {_modified(dbt_docs)}</p>"
    path = root / "index.html"
    path.write_text(html.page("recforge reports", f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", body))
    return path
