"""A user's diagnosis as text (the CLI) and as reports/diagnose/<safe name>.html, with a JSON copy.

User ids come from the command line and are untrusted: every id, item id and reason is escaped
in the page, and the file name is the id only when it is plain (letters, digits, ``_``, ``-``, at
most 64 characters); any other id gets a slug of its plain characters plus a hash of the whole id,
so no id can name a path outside ``reports/diagnose/`` and two ids never share a page. The JSON
beside each page is what reports/index.html lists (id, outcome, explanation, time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.evaluation.diagnosis import FALLBACK, GeneratorView, UserDiagnosis
from pipelines.reports import html
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DIAGNOSE_DIR = Path("diagnose")  # below reports/
PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHOWN_IN_TEXT = 10  # proposed items printed per generator (the page shows the whole top depth)


def safe_file_stem(user_id: str) -> str:
    """A file name stem for `user_id` that is a plain name in one folder, distinct per id."""
    if PLAIN_ID.fullmatch(user_id):
        return user_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", user_id)[:40].strip("_") or "user"
    return f"{slug}-{hashlib.sha256(user_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def without_outcome(outcome: str, explanation: str) -> str:
    """The explanation without its leading "<outcome>: ", for pages that show the outcome beside it."""
    return explanation.removeprefix(f"{outcome}: ")


def _items(n: int, kind: str) -> str:
    return f"{n} {kind} item" if n == 1 else f"{n} {kind} items"


def targets_line(d: UserDiagnosis) -> str:
    """How many targets, of which kind, and how much history the user has."""
    n = len(d.targets) + len(d.unknown_targets)
    if d.target_kind == "held-out":
        kind = f"{_items(n, 'held-out')} (the backtest's newest test window)"
    else:
        kind = (
            f"{_items(n, 'most recent')} (the backtest's newest fold holds out nothing of theirs with a history "
            "before it, so their own last were held out)"
        )
    return f"{kind}; {d.history_items} items of history"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _rank(rank: int | None, depth: int | None) -> str:
    """A target's rank; with a generator's `depth`, whether it was proposed at all."""
    if rank is None:
        return "never ranked (seen in training)"
    return f"{rank}" if depth is None or rank <= depth else f"{rank} (not proposed: beyond the top {depth})"


def _spread(view: GeneratorView, k: int) -> str:
    s = view.spread
    return (
        f"max {_number(s.max)}, q75 {_number(s.q75)}, median {_number(s.median)}, q25 {_number(s.q25)}, "
        f"min {_number(s.min)}; rank 1 - rank {k}: {_number(s.gap_1_k)}"
    )


def _is_a_generator(d: UserDiagnosis) -> bool:
    """Whether the final ranking is one of the generators' (any champion but the two-stage ranker)."""
    return d.ranking is not None and any(
        view.name == d.ranking.name and view.proposed == d.ranking.proposed for view in d.generators
    )


def diagnosis_text(d: UserDiagnosis) -> str:
    """What `recforge diagnose` prints: the one-line diagnosis first, then the evidence."""
    lines = [f"user {d.user_id!r}: {d.explanation}", f"diagnosis: {d.outcome}"]
    lines += [f"  {key}: {value}" for key, value in d.facts.items()]
    if d.outcome == FALLBACK:
        lines.append(f"fallback list (top {d.k}):")
        lines += [f"  {e.rank:>3}. {e.item}  score {e.score:.4g}  ({e.reason})" for e in d.final]
        return "\n".join(lines)
    lines.append(f"targets: {targets_line(d)}")
    lines.append(f"  {', '.join(d.targets) or '-'}")
    if d.unknown_targets:
        lines.append(f"  unknown to every model at the cutoff: {', '.join(d.unknown_targets)}")
    lines.append(f"candidate generators (top {d.depth} each):")
    for view in d.generators:
        lines.append(f"  {view.name}: spread {_spread(view, d.k)}")
        top = ", ".join(f"{item} {score:.3g}" for item, score in view.proposed[:SHOWN_IN_TEXT])
        lines.append(f"    top {min(SHOWN_IN_TEXT, len(view.proposed))}: {top}")
        for item, rank in view.target_ranks.items():
            lines.append(f"    target {item}: rank {_rank(rank, d.depth)}")
    for name, reason in d.skipped_generators.items():
        lines.append(f"  {name}: {reason}")
    if d.ranking is not None and _is_a_generator(d):
        lines.append(f"final ranking before the rules: {d.ranking.name}, the generator of that name above")
    elif d.ranking is not None:
        note = f" ({d.ranking.note})" if d.ranking.note else ""
        lines.append(f"final ranking before the rules: {d.ranking.name}{note}; spread {_spread(d.ranking, d.k)}")
        for item, rank in d.ranking.target_ranks.items():
            lines.append(f"  target {item}: rank {_rank(rank, None)}")
    lines.append(f"business rules: {len(d.removals)} item(s) taken out of the top {d.k}")
    for r in d.removals:
        after = "out of the list" if r.rank_after is None else f"now rank {r.rank_after}"
        mark = "  [target]" if r.is_target else ""
        lines.append(f"  {r.rule}: {r.item} (was rank {r.rank_before}, {after}): {r.reason}{mark}")
    lines.append(f"final top {d.k}:")
    for e in d.final:
        lines.append(f"  {e.rank:>3}. {e.item}  score {e.score:.4g}  ({e.reason}){'  [target]' if e.is_target else ''}")
    return "\n".join(lines)


def _target(flag: bool) -> str:
    return "<span class='ok'>target</span>" if flag else ""


def _generator_section(view: GeneratorView, d: UserDiagnosis, depth: int | None) -> str:
    targets = set(d.targets)
    rows = [[item, _rank(rank, depth)] for item, rank in view.target_ranks.items()]
    proposed = [
        [rank, item, f"{score:.4g}", _target(item in targets)] for rank, (item, score) in enumerate(view.proposed, 1)
    ]
    note = f"<p class='sub'>{html.escape(view.note)}</p>" if view.note else ""
    return (
        f"<h3>{html.escape(view.name)}</h3>{note}<p>Score spread over its top {len(view.proposed)}: "
        f"{html.escape(_spread(view, d.k))}</p>"
        + (html.table(["target", "rank"], rows) if rows else "")
        + f"<details><summary>top {len(view.proposed)} proposed</summary>"
        + html.table(["rank", "item", "score", ""], proposed, frozenset({3}))
        + "</details>"
    )


def diagnosis_page(d: UserDiagnosis) -> str:
    """The self-contained page (no script, no external resource); every value escaped."""
    css = {FALLBACK: "warn", "none": "ok"}.get(d.outcome, "bad")
    why = without_outcome(d.outcome, d.explanation)
    body = f"<p><span class='{css}'>{html.escape(d.outcome)}</span>: {html.escape(why)}</p>"
    body += html.table(["fact", "value"], [[key, value] for key, value in d.facts.items()])
    if d.outcome != FALLBACK:
        body += f"<h2>Targets</h2><p>{html.escape(targets_line(d))}.</p>"
        body += f"<p>{html.escape(', '.join(d.targets) or '-')}</p>"
        if d.unknown_targets:
            body += (
                f"<p class='sub'>Unknown to every model at the cutoff: {html.escape(', '.join(d.unknown_targets))}</p>"
            )
        body += f"<h2>Candidate generators (top {d.depth} each)</h2>"
        body += "".join(_generator_section(view, d, d.depth) for view in d.generators)
        if d.skipped_generators:
            body += html.table(["not fitted", "why"], [[n, r] for n, r in d.skipped_generators.items()])
        if d.ranking is not None:
            body += "<h2>Final ranking before the business rules</h2>"
            if _is_a_generator(d):
                body += f"<p>{html.escape(d.ranking.name)}: the generator of that name above.</p>"
            else:
                body += _generator_section(d.ranking, d, None)
        body += f"<h2>Business rules: what left the top {d.k}</h2>"
        rows = [
            [r.rule, r.item, r.rank_before, "out of the list" if r.rank_after is None else r.rank_after, r.reason,
             _target(r.is_target)]
            for r in d.removals
        ]  # fmt: skip
        body += (
            html.table(["rule", "item", "rank before", "rank after", "reason", ""], rows, frozenset({5}))
            if rows
            else "<p class='none'>No rule changed the top of this list.</p>"
        )
    title = f"fallback list (top {d.k})" if d.outcome == FALLBACK else f"Final top {d.k} (what the user is served)"
    body += f"<h2>{html.escape(title)}</h2>"
    body += html.table(
        ["rank", "item", "score", "reason", ""],
        [[e.rank, e.item, f"{e.score:.4g}", e.reason, _target(e.is_target)] for e in d.final],
        frozenset({4}),
    )
    subtitle = f"diagnosed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; k={d.k}, depth={d.depth}"
    return html.page(f"Diagnosis of user {d.user_id}", subtitle, body)


def write_diagnosis(settings: Settings, d: UserDiagnosis) -> Path:
    """Write the page and its JSON under reports/diagnose/; return the page's path."""
    folder = settings.reports_dir / DIAGNOSE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_file_stem(d.user_id)
    page = folder / f"{stem}.html"
    page.write_text(diagnosis_page(d), encoding="utf-8")
    record = {**d.to_dict(), "written_at": datetime.now(UTC).isoformat(), "page": page.name}
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return page


@dataclass(frozen=True)
class DiagnosisEntry:
    user_id: str
    outcome: str
    explanation: str
    written_at: str
    page: Path


def list_diagnoses(settings: Settings, limit: int = 50) -> list[DiagnosisEntry]:
    """The newest diagnoses written under reports/diagnose/, for reports/index.html (unreadable files skipped)."""
    folder = settings.reports_dir / DIAGNOSE_DIR
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.exists() else []
    entries = []
    for path in records[:limit]:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            page = folder / Path(record["page"]).name
            entries.append(
                DiagnosisEntry(str(record["user_id"]), str(record["outcome"]), str(record["explanation"]),
                               str(record["written_at"]), page)
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("skipping %s in the report index: %s", path, error)
    return entries
