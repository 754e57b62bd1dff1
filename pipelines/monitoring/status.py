"""What a person wants to know after a run: what happened, what is live, where to look."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipelines.settings import Settings


def _warehouse_lines(settings: Settings) -> list[str]:
    from pipelines.ingest.impressions import SOURCE as IMPRESSION_SOURCE
    from pipelines.warehouse.connection import connect, location, warehouse_exists

    if not warehouse_exists(settings):
        return ["warehouse: not built yet"]
    with connect(settings) as con:
        batches, rows_in, accepted, quarantined = con.execute(
            "select count(*), coalesce(sum(rows_input), 0), coalesce(sum(rows_accepted), 0), "
            "coalesce(sum(rows_quarantined), 0) from raw.batches where source <> ?",
            [IMPRESSION_SOURCE],
        ).fetchone()
        slates = con.execute(
            "select count(*), coalesce(sum(rows_accepted), 0), coalesce(sum(rows_quarantined), 0) "
            "from raw.batches where source = ?",
            [IMPRESSION_SOURCE],
        ).fetchone()
        reasons = con.execute(
            "select reason, count(*) from quarantine.events group by reason order by count(*) desc"
        ).fetchall()
        skipped = con.execute("select reason from raw.skipped_files").fetchall()
        built = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'marts' and table_name = 'consent_withheld_users'"
        ).fetchone()[0]
        consent = (
            con.execute(
                "select count(*), coalesce(sum(n_events_excluded), 0) from marts.consent_withheld_users"
            ).fetchone()
            if built
            else None
        )
    by_reason = ", ".join(f"{reason} {n}" for reason, n in reasons) or "none"
    lines = [
        f"warehouse:   {location(settings)}",
        f"  ingested {batches} batches: {rows_in} rows in = {accepted} accepted + {quarantined} quarantined",
        f"  quarantine by reason: {by_reason}",
    ]
    if consent is not None:
        from pipelines.validation.checkpoints import consent_note

        lines.append(f"  {consent_note(*consent)}")
    if slates[0]:
        lines.append(f"  impressions: {slates[0]} files, {slates[1]} slates accepted + {slates[2]} quarantined")
    if skipped:
        kinds = Counter(reason.split(":")[0] for (reason,) in skipped)
        listed = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
        lines.append(f"  files skipped (not read, see raw.skipped_files): {len(skipped)}: {listed}")
    return lines


def _registry_lines(settings: Settings) -> list[str]:
    from pipelines.training.tracking import CHAMPION, configure, version_by_alias

    client = configure(settings)
    champion = version_by_alias(client, settings.registered_model_name, CHAMPION)
    if champion is None:
        return [f"mlflow:      {settings.tracking_uri} (no champion yet)"]
    from pipelines.training.evaluation import metric_names

    metrics = client.get_run(champion.run_id).data.metrics
    shown = metric_names(settings).headline
    scores = ", ".join(f"{name} {metrics[name]:.4f}" for name in shown if name in metrics)
    if not scores:  # trained under other cut-offs than the settings': say so rather than print nothing
        scores = f"none of {list(shown)} recorded (trained with another eval_k / recall_k?)"
    return [
        f"mlflow:      {settings.tracking_uri}",
        f"  champion: {settings.registered_model_name} v{champion.version} "
        f"({champion.tags.get('model', '?')}), held-out {scores}",
    ]


def _publication_lines(settings: Settings) -> list[str]:
    from pipelines.publication.publish import current_version
    from serving.publication import Publication

    version = current_version(settings.published_dir)
    if version is None:
        return ["published:   nothing live yet"]
    publication = Publication(settings.published_dir / version)
    sample_user = str(publication.user_ids[len(publication.user_ids) // 2])
    top = publication.for_user(sample_user, 10) or []
    return [
        f"published:   {settings.published_dir / version} (live via CURRENT)",
        f"  {len(publication.user_ids)} users x top {publication.top_n}, {len(publication.item_ids)} items indexed",
        f"  sample user {sample_user} top-10: {' '.join(r.item_id for r in top)}",
        f"  try: curl 'http://127.0.0.1:8000/v1/users/{sample_user}/recommendations?k=10'",
    ]


def champion_not_published(settings: Settings) -> str | None:
    """A warning line when the registry's champion is not the model the live publication serves; else None.

    After a manual promotion, a rollback, or a publish that failed, users are served another model
    than the one the registry calls champion until ``recforge publish`` runs.
    """
    from pipelines.training.tracking import CHAMPION, configure, version_by_alias
    from serving.format import current_version, read_manifest

    champion = version_by_alias(configure(settings), settings.registered_model_name, CHAMPION)
    live = current_version(settings.published_dir)
    if champion is None or live is None:
        return None
    served = str(read_manifest(settings.published_dir / live)["model"]["version"])
    if served == str(champion.version):
        return None
    return (
        f"WARNING: the champion is v{champion.version} but the live publication {live} serves v{served}: "
        "run `recforge publish` to serve the champion"
    )


def status_lines(settings: Settings) -> list[str]:
    docs: Path = settings.reports_dir / "data_docs" / "index.html"
    warning = champion_not_published(settings)
    return [
        *_warehouse_lines(settings),
        *_registry_lines(settings),
        *_publication_lines(settings),
        *([warning] if warning else []),
        "API:         http://127.0.0.1:8000  (docs at /docs; `make run` serves it, `recforge serve` alone too)",
        "Airflow UI:  make ui   -> http://127.0.0.1:8080 (login admin; `make ui` prints the password)",
        "MLflow UI:   make ui   -> http://127.0.0.1:5000",
        f"validation:  {docs.as_uri() if docs.exists() else '(no Data Docs yet)'}",
        f"reports:     {(settings.reports_dir / 'index.html').as_uri()}  (Data Docs, drift, evaluation, dbt docs)",
    ]
