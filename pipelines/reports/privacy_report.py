"""The forget audit as analysts and auditors read it: one JSON file per request and one page of all.

``reports/privacy/forget-<request id>.json`` is the request's record as stored in
``monitoring.forget_requests``; ``reports/privacy/index.html`` lists every request (newest first)
with the rows removed per store. Neither holds a user id: users appear as HMAC-SHA256 hashes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pipelines.reports import html
from pipelines.settings import Settings

PRIVACY_DIR = "privacy"
PRIVACY_INDEX = f"{PRIVACY_DIR}/index.html"


def write_forget_report(settings: Settings, record: dict) -> Path:
    """Write the request's JSON record, rebuild the page of every request, refresh reports/index.html."""
    from pipelines.reports.index import write_index

    root = settings.reports_dir / PRIVACY_DIR
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"forget-{record['request_id']}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    records = sorted(
        (json.loads(p.read_text()) for p in root.glob("forget-*.json")), key=lambda r: r["requested_at"], reverse=True
    )
    body = (
        "<p>Every request of <code>recforge forget</code> (or the <code>recforge_forget</code> DAG): the rows "
        "removed in each store, the live publication that no longer holds the users and the model versions "
        "rewritten. Users are shown as keyed hashes (HMAC-SHA256), never by their id.</p>"
    )
    for item in records:
        verified = html.status(item.get("verified"), good="no file names them", bad="ids remain")
        body += f"<h2>Request {html.escape(item['request_id'])}</h2>"
        body += (
            f"<p>requested {html.escape(item['requested_at'])}, finished {html.escape(item.get('finished_at') or '-')}"
            f" &middot; {len(item['user_hashes'])} user(s) &middot; verification: {verified}<br>"
            f"live publication without them: <code>{html.escape(item.get('publication_version') or '-')}</code>"
            f" &middot; model versions rewritten: {html.escape(', '.join(item.get('model_versions') or []) or '-')}</p>"
        )
        rows = [[s["store"], s["rows_removed"], s.get("note", "")] for s in item["stores"]]
        body += html.table(["store", "rows removed", "note"], rows)
        body += (
            "<p class='sub'>user hashes: "
            + ", ".join(f"<code>{html.escape(h[:16])}...</code>" for h in item["user_hashes"])
            + "</p>"
        )
    page = html.page("recforge forget requests", f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", body)
    (root / "index.html").write_text(page)
    write_index(settings)
    return path
