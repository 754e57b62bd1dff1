"""Forget users everywhere recforge keeps them, in one run, and leave an audit record without their ids.

The stores, in the order a request walks them (``STORES``); each step is a function that returns the
rows it removed and is idempotent, so a request that died half-way is simply run again:

1. ``serving_deny_list``: the server answers the users with the fallback from its next look at
   ``published/denylist.txt`` (salted hashes, ``serving/denylist.py``), before anything else changes,
   until the publication without them is live.
2. ``landing_files``: every file under ``landing/`` (not yet ingested or kept after ingest; JSONL, CSV,
   gzip, Parquet, JSON documents): the users' rows are cut and the file rewritten atomically.
3. ``raw_events``, ``impressions`` (served slates' shown items), ``quarantine`` of both (raw content
   included: any quarantined row naming the id) and ``batches`` (their counts lose the removed rows,
   so accepted + quarantined = input still holds; ``RAW_SOURCES``), plus any other table of the
   raw/monitoring layer with a ``user_id`` column, in one transaction; ``drift_baseline`` (the
   baseline's per-user activity).
4. ``dbt_models``: ``dbt build --full-refresh`` rebuilds every model from the raw layer, the
   incremental ``int_events_deduped`` included (a plain run would keep the users' old rows).
5. ``warehouse_file``: DuckDB keeps deleted rows in free blocks; the file is copied into a fresh one
   (``COPY FROM DATABASE``) that replaces it. PostgreSQL: ``VACUUM FULL`` of the tables touched.
6. ``model_artifacts``: every saved model bundle (MLflow's artifact store and the scratch copies
   under ``models/``) loses the users' rows (``Recommender.forget_users``: ids, seen items, user
   factors and any other per-user state) and is rewritten in place; each registered version touched
   is tagged with the request. The FAISS item index holds items only and is not changed.
7. ``publications``: a version of the live publication without the users is made live and every
   older kept version is rewritten (``publish_without_users``).
8. ``reports_and_logs``: any other file still naming an id (an HTML report, a dbt or Airflow log,
   a SQLite database such as Airflow's metadata) has it replaced by ``[forgotten]``; SQLite files
   are vacuumed so no free page keeps it.
9. verification: every file under RECFORGE_HOME is searched for the ids, raw and decoded
   (``pipelines/privacy/scan.py``); a hit fails the request, naming the files.

The audit (``monitoring.forget_requests`` and ``reports/privacy/``) keeps the request id, times,
rows removed per store, the publication version without the users and the model versions changed,
and for each user only HMAC-SHA256(secret, id) (``pipelines/privacy/keys.py``).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipelines.privacy.keys import keyed_hash, privacy_key
from pipelines.privacy.scan import GZIP_MAGIC, PARQUET_MAGIC, ZIP_MAGIC, Hit, file_holds, find_ids, needles
from pipelines.settings import Settings
from serving.ids import ID_PATTERN, id_violation

log = logging.getLogger(__name__)

REDACTED = "[forgotten]"
DBT_SCHEMAS = ("staging", "intermediate", "marts")
# Tables of the raw and monitoring layers holding user rows by a user_id column (impression logs and
# whatever else a stage adds later are found the same way).
PYTHON_SCHEMAS = ("raw", "quarantine", "monitoring")


@dataclass(frozen=True)
class RawSource:
    """One landed source as the warehouse holds it: the audit's name for its accepted rows (`store`), those rows,
    quarantined rows (which keep their raw
    content; `quarantine_number` numbers a row in its file), what one unit of a batch's ``rows_input``
    is (`batch_unit`, SQL over `raw_table`) and the column that dates a row (`time_column`).

    Forgetting and retention remove rows from each through :func:`remove_raw_rows`, so a batch's
    accepted + quarantined = input holds after either."""

    store: str
    raw_table: str
    batch_unit: str
    quarantine_table: str
    quarantine_number: str
    time_column: str


EVENTS = RawSource("raw_events", "raw.events", "count(*)", "quarantine.events", "line_number", "event_ts")
# A batch of impressions counts served slates: one slate is many raw.impression_items rows.
IMPRESSIONS = RawSource(
    "impressions",
    "raw.impression_items",
    "count(distinct request_id)",
    "quarantine.impressions",
    "row_number",
    "served_at",
)
RAW_SOURCES = (EVENTS, IMPRESSIONS)
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
ITEM_ONLY_NOTE = "item_index.faiss holds item vectors only: unchanged"


class ForgetError(RuntimeError):
    """A request that cannot be carried out (bad ids), or that left an id behind (named files)."""


@dataclass
class StoreOutcome:
    store: str
    rows_removed: int
    note: str = ""


@dataclass
class ForgetResult:
    request_id: str
    requested_at: datetime
    finished_at: datetime | None = None
    user_hashes: list[str] = field(default_factory=list)
    stores: list[StoreOutcome] = field(default_factory=list)
    publication_version: str | None = None
    model_versions: list[str] = field(default_factory=list)
    verified: bool | None = None
    remaining: list[str] = field(default_factory=list)  # files still naming an id (paths only)
    report: Path | None = None

    @property
    def rows_removed(self) -> int:
        return sum(outcome.rows_removed for outcome in self.stores)

    def summary(self) -> str:
        touched = ", ".join(f"{o.store} {o.rows_removed}" for o in self.stores if o.rows_removed)
        verdict = {True: "verified: no file names them", False: "NOT verified", None: "not verified (off)"}
        return (
            f"forget {self.request_id}: {len(self.user_hashes)} user(s), {self.rows_removed} rows removed "
            f"({touched or 'nothing held them'}); live publication {self.publication_version or '-'}; "
            f"{verdict[self.verified]}"
        )

    def as_record(self) -> dict:
        record = asdict(self)
        record["requested_at"] = self.requested_at.isoformat()
        record["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        record["report"] = str(self.report) if self.report else None
        return record


def checked_ids(user_ids: Iterable[str]) -> list[str]:
    """The distinct ids in order, after the id contract (serving/ids.py): a bad one stops the request."""
    ids = list(dict.fromkeys(str(value) for value in user_ids))
    if not ids:
        raise ForgetError("no user id given: name at least one (--user ID or --file)")
    for position, value in enumerate(ids, start=1):
        violation = id_violation(value)
        if violation is not None:
            raise ForgetError(
                f"user id #{position} breaks the id contract {ID_PATTERN} ({violation}, {len(value)} characters): "
                "nothing was forgotten"
            )
    return ids


def with_pseudonyms(settings: Settings, ids: list[str]) -> list[str]:
    """The ids and, when pseudonymisation is on, their pseudonyms (serving/pseudonyms.py).

    A request names the ids the app knows; the warehouse, models and publications hold their
    pseudonyms, and landing files not yet ingested the ids: every store is searched for both.
    """
    pseudonymize = settings.pseudonymizer()
    if pseudonymize is None:
        return ids
    return list(dict.fromkeys([*ids, *(pseudonymize(value) for value in ids)]))


def read_id_file(path: Path) -> list[str]:
    """Ids one per line ('#' starts a comment, blank lines skipped), as `recforge forget --file` reads them."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ForgetError(f"{path}: cannot read the id file: {error.strerror or error}") from None
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


# --- 1. serving's deny list


def deny_in_serving(settings: Settings, ids: list[str]) -> StoreOutcome:
    from serving.denylist import DENYLIST, add_to_denylist
    from serving.format import current_version

    root = settings.published_dir
    added = add_to_denylist(root / DENYLIST, ids, current_version(root))
    return StoreOutcome("serving_deny_list", added, "salted hashes, held until the clean publication is live")


# --- 2. landing files


class UserRows:
    """Which rows of a landing file are the users': any row naming one of the ids (forgetting)."""

    def __init__(self, ids: list[str]):
        self.ids = set(ids)
        self.probes = [needle for value in ids for needle in needles(value)]

    def in_file(self, decoded: bytes) -> bool:
        return any(needle.found_in(decoded) for needle in self.probes)

    def line(self, line: bytes, header: list[str] | None) -> bool:
        """A line is cut whenever it names the id anywhere, parsed or not: a malformed row of the user is
        theirs too, and a CSV field in quotes cannot hide it."""
        return any(needle.found_in(line) for needle in self.probes)

    def value(self, value) -> bool:
        """A JSON document's element or member value that is one of the ids."""
        return isinstance(value, str) and value in self.ids

    def key(self, key: str) -> bool:
        return key in self.ids

    def parquet_mask(self, table):
        import pyarrow as pa
        import pyarrow.compute as pc

        mask = None
        for name in table.column_names:
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                hits = pc.fill_null(pc.is_in(column, value_set=pa.array(sorted(self.ids), type=column.type)), False)
                mask = hits if mask is None else pc.or_(mask, hits)
        return mask


def forget_in_landing(settings: Settings, ids: list[str]) -> StoreOutcome:
    """Cut the users' rows out of every landing file that holds them (each file rewritten atomically)."""
    return remove_landing_rows(settings, UserRows(ids), "landing_files", delete_emptied=False)


def remove_landing_rows(settings: Settings, rows, store: str, delete_emptied: bool) -> StoreOutcome:
    """Cut the rows `rows` matches (UserRows, retention's OlderThan) out of every landing file.

    Each file that loses rows is rewritten atomically; with `delete_emptied` (retention), one left
    with no row is deleted (forgetting keeps it: an emptied day is still a day that was delivered).
    In the scaled configuration the Redis Streams are drained into landing files first.
    """
    from pipelines.ingest.stream_drain import drain_scaled_streams

    drain_scaled_streams(settings)  # scaled: events and slates still in Redis Streams land first, then are walked
    removed, files, deleted = 0, 0, 0
    root = settings.landing_dir
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
        data = path.read_bytes()
        decoded = _decoded(path, data)
        if not rows.in_file(decoded):
            continue
        rewritten, count = _without_rows(path, data, decoded, rows)
        if not count:
            continue
        if delete_emptied and _no_rows_left(path, rewritten):
            path.unlink()
            deleted += 1
        else:
            _replace_bytes(path, rewritten)
        removed += count
        files += 1
    return StoreOutcome(store, removed, f"{files} file(s) rewritten ({deleted} of them emptied and deleted)")


def _no_rows_left(path: Path, data: bytes) -> bool:
    """Whether a rewritten landing file holds no row any more (a CSV: its header only)."""
    if data.startswith(PARQUET_MAGIC):
        import pyarrow.parquet as pq

        return pq.read_metadata(io.BytesIO(data)).num_rows == 0
    text = gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data
    lines = [line for line in text.splitlines() if line.strip()]
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".json") and not name.endswith(".jsonl"):
        return text.strip() in (b"[]", b"{}")
    return len(lines) <= (1 if name.endswith(".csv") else 0)


def _decoded(path: Path, data: bytes) -> bytes:
    if data.startswith(GZIP_MAGIC):
        return gzip.decompress(data)
    if data.startswith(PARQUET_MAGIC):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return "\n".join(str(v) for name in table.column_names for v in table.column(name).to_pylist()).encode()
    return data


def _without_rows(path: Path, data: bytes, decoded: bytes, rows) -> tuple[bytes, int]:
    """The file's bytes without the rows `rows` matches, and how many rows went."""
    if data.startswith(PARQUET_MAGIC):
        return _parquet_without(path, rows)
    text_rows, count = _text_without(path.name.lower().removesuffix(".gz"), decoded, rows)
    return (gzip.compress(text_rows, mtime=0) if data.startswith(GZIP_MAGIC) else text_rows), count


def _text_without(name: str, text: bytes, rows) -> tuple[bytes, int]:
    """A JSON document loses every matching value; line formats (JSONL, CSV, logs) every matching line."""
    if name.endswith(".json") and not name.endswith(".jsonl"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict | list):
            cleaned, count = _json_without(document, rows)
            return (json.dumps(cleaned, indent=2) + "\n").encode(), count
    lines = text.splitlines(keepends=True)
    is_csv = name.endswith(".csv")
    header = _csv_fields(lines[0]) if is_csv and lines else None
    kept = [line for i, line in enumerate(lines) if (is_csv and i == 0) or not rows.line(line, header)]
    if is_csv and lines and len(kept) < len(lines) and kept[:1] != lines[:1]:
        kept.insert(0, lines[0])  # never the header, even if a column were named like an id
    return b"".join(kept), len(lines) - len(kept)


def _csv_fields(line: bytes) -> list[str]:
    import csv

    return next(csv.reader([line.decode("utf-8", "replace")]), [])


def _json_without(value, rows):
    """`value` without list elements or object members that `rows` matches (by key, value or whole row)."""
    if isinstance(value, list):
        kept = [v for v in value if not rows.value(v)]
        removed = len(value) - len(kept)
        cleaned = []
        for item in kept:
            item, count = _json_without(item, rows)
            cleaned.append(item)
            removed += count
        return cleaned, removed
    if isinstance(value, dict):
        cleaned, removed = {}, 0
        for key, item in value.items():
            if rows.key(key) or rows.value(item):
                removed += 1
                continue
            cleaned[key], count = _json_without(item, rows)
            removed += count
        return cleaned, removed
    return value, 0


def _parquet_without(path: Path, rows) -> tuple[bytes, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    mask = rows.parquet_mask(table)
    if mask is None:
        return path.read_bytes(), 0
    kept = table.filter(pc.invert(mask))
    buffer = io.BytesIO()
    pq.write_table(kept, buffer)
    return buffer.getvalue(), table.num_rows - kept.num_rows


def _replace_bytes(path: Path, data: bytes) -> None:
    """Write a file's new content beside it, fsync, rename over it: a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.forget-tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --- 3. the raw layer, quarantine, batches, other user tables, the drift baseline


def forget_in_warehouse(settings: Settings, ids: list[str]) -> list[StoreOutcome]:
    """Delete the users' raw events, quarantined rows and other user rows; fix the batches' counts. One transaction."""
    from pipelines.warehouse.connection import connect

    probes = [needle for value in ids for needle in needles(value)]
    marks = ", ".join("?" for _ in ids)
    with connect(settings) as con, con.transaction():
        accepted, doomed, batches = {}, 0, 0
        for source in RAW_SOURCES:
            # strpos narrows portably (DuckDB and PostgreSQL); the token check in Python decides.
            candidates = set()
            for value in ids:
                candidates |= set(
                    con.execute(
                        f"select batch_id, {source.quarantine_number}, raw, reason from {source.quarantine_table} "
                        "where strpos(raw, ?) > 0",
                        [value],
                    ).fetchall()
                )
            named = [
                (b, n, reason) for b, n, raw, reason in candidates if any(p.found_in(raw.encode()) for p in probes)
            ]
            accepted[source], recounted = remove_raw_rows(con, source, f"user_id in ({marks})", ids, named)
            doomed += len(named)
            batches += recounted
        other_rows, other_tables = 0, []
        for schema, table in _user_tables(con):
            if f"{schema}.{table}" in {source.raw_table for source in RAW_SOURCES} | {"monitoring.drift_baseline"}:
                continue
            count = con.execute(f'select count(*) from {schema}."{table}" where user_id in ({marks})', ids).fetchone()[
                0
            ]
            if count:
                con.execute(f'delete from {schema}."{table}" where user_id in ({marks})', ids)
                other_rows += count
                other_tables.append(f"{schema}.{table}")
        baseline = con.execute(
            f"select count(*) from monitoring.drift_baseline where kind = 'user' and key in ({marks})", ids
        ).fetchone()[0]
        con.execute(f"delete from monitoring.drift_baseline where kind = 'user' and key in ({marks})", ids)
    return [
        *accepted_outcomes(accepted),
        StoreOutcome("quarantine", doomed, "rows whose raw content names the id"),
        StoreOutcome("batches", batches, "batches whose counts lost the removed rows"),
        StoreOutcome("other_user_tables", other_rows, ", ".join(other_tables) or "none held them"),
        StoreOutcome("drift_baseline", baseline, "per-user activity of the baseline window"),
    ]


def accepted_outcomes(removed: dict[RawSource, int]) -> list[StoreOutcome]:
    """The accepted rows removed from each source, as the audit names them."""
    return [StoreOutcome(source.store, removed[source], source.raw_table) for source in RAW_SOURCES]


def remove_raw_rows(
    con, source: RawSource, raw_where: str, parameters: list, quarantined: list[tuple[str, int, str]]
) -> tuple[int, int]:
    """Delete `source`'s accepted rows matching `raw_where` and its quarantined rows (batch, row number,
    reason) given, and take them out of their batches' counts; the caller's transaction. Returns (accepted
    rows removed, batches recounted).

    Shared by forgetting (``user_id in (...)``, rows whose raw content names an id) and retention
    (older than the cutoff by the source's time column, rows quarantined before the cutoff day).
    """
    con.execute("create temp table if not exists forget_quarantined (batch_id varchar, line_number integer)")
    con.execute("delete from forget_quarantined")
    if quarantined:
        con.executemany("insert into forget_quarantined values (?, ?)", [(b, n) for b, n, _ in quarantined])
    per_batch_raw = dict(
        con.execute(
            f"select batch_id, {source.batch_unit} from {source.raw_table} where {raw_where} group by batch_id",
            parameters,
        ).fetchall()
    )
    removed = con.execute(f"select count(*) from {source.raw_table} where {raw_where}", parameters).fetchone()[0]
    per_batch_quarantine: dict[str, dict[str, int]] = {}
    for batch, _, reason in quarantined:
        per_batch_quarantine.setdefault(batch, {}).setdefault(reason, 0)
        per_batch_quarantine[batch][reason] += 1
    con.execute(f"delete from {source.raw_table} where {raw_where}", parameters)
    table, number = source.quarantine_table, source.quarantine_number
    con.execute(
        f"delete from {table} where exists (select 1 from forget_quarantined as f "
        f"where f.batch_id = {table}.batch_id and f.line_number = {table}.{number})"
    )
    batches = 0
    for batch in sorted(set(per_batch_raw) | set(per_batch_quarantine)):
        batches += _recount_batch(con, batch, per_batch_raw.get(batch, 0), per_batch_quarantine.get(batch, {}))
    return removed, batches


def _user_tables(con) -> list[tuple[str, str]]:
    marks = ", ".join("?" for _ in PYTHON_SCHEMAS)
    return con.execute(
        "select table_schema, table_name from information_schema.columns "
        f"where column_name = 'user_id' and table_schema in ({marks}) order by 1, 2",
        list(PYTHON_SCHEMAS),
    ).fetchall()


def _recount_batch(con, batch: str, raw_rows: int, quarantined: dict[str, int]) -> int:
    """Take the removed rows out of a batch's counts, so accepted + quarantined = input still holds."""
    row = con.execute("select quarantined_by_reason from raw.batches where batch_id = ?", [batch]).fetchone()
    if row is None:
        return 0
    reasons = json.loads(row[0]) if row[0] else {}
    for reason, count in quarantined.items():
        reasons[reason] = reasons.get(reason, 0) - count
        if reasons[reason] <= 0:
            del reasons[reason]
    q = sum(quarantined.values())
    con.execute(
        "update raw.batches set rows_input = rows_input - ?, rows_accepted = rows_accepted - ?, "
        "rows_quarantined = rows_quarantined - ?, quarantined_by_reason = ? where batch_id = ?",
        [raw_rows + q, raw_rows, q, json.dumps(reasons), batch],
    )
    return 1


# --- 4. every dbt model, incremental ones included


def forget_in_dbt_models(settings: Settings, ids: list[str]) -> StoreOutcome:
    """Rebuild every model from the raw layer (full refresh): an incremental model keeps old rows otherwise."""
    marks = ", ".join("?" for _ in ids)
    return rebuild_dbt_models(settings, {"user_id": (f"user_id in ({marks})", ids)})


def rebuild_dbt_models(settings: Settings, selections: dict[str, tuple[str, list]]) -> StoreOutcome:
    """Count the rows each selection picks in every dbt model with its column, then rebuild every model
    (full refresh). `selections` maps a column to (SQL condition, parameters).

    Forgetting selects the users' rows (``user_id in (...)``), retention the old rows by each source's
    time column (``event_ts < ?``, ``served_at < ?``).
    """
    from pipelines.warehouse.connection import connect, warehouse_exists

    if not warehouse_exists(settings):
        return StoreOutcome("dbt_models", 0, "no warehouse yet")
    columns_of: dict[tuple[str, str], list[str]] = {}
    with connect(settings) as con:
        schema_marks, column_marks = ", ".join("?" for _ in DBT_SCHEMAS), ", ".join("?" for _ in selections)
        for schema, table, column in con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            f"where table_schema in ({schema_marks}) and column_name in ({column_marks}) order by 1, 2, 3",
            [*DBT_SCHEMAS, *selections],
        ).fetchall():
            columns_of.setdefault((schema, table), []).append(column)
        before = {}
        for (schema, table), columns in columns_of.items():
            # A row a model holds once is counted once, whichever of its columns selects it.
            where = " or ".join(f"({selections[c][0]})" for c in columns)
            parameters = [p for c in columns for p in selections[c][1]]
            before[f"{schema}.{table}"] = con.execute(
                f'select count(*) from {schema}."{table}" where {where}', parameters
            ).fetchone()[0]
    if not before:
        return StoreOutcome("dbt_models", 0, "dbt has not built the warehouse yet")
    rebuild_in_child(settings)
    touched = {name: rows for name, rows in before.items() if rows}
    return StoreOutcome(
        "dbt_models",
        sum(touched.values()),
        "dbt build --full-refresh; " + (", ".join(f"{n} {r}" for n, r in touched.items()) or "no model held them"),
    )


REBUILD = (
    "from pipelines.settings import get_settings; from pipelines.warehouse.transform import build_warehouse; "
    "print(build_warehouse(get_settings(), full_refresh=True).summary())"
)


def rebuild_in_child(settings: Settings) -> None:
    """`dbt build --full-refresh` in a child process: dbt-duckdb keeps its database open in the process that ran
    it, and the warehouse file is replaced next (step 5), which must leave no connection on the old file."""
    import subprocess
    import sys

    env = {**os.environ, **settings.to_environment(), "RECFORGE_HOME": str(settings.home)}
    done = subprocess.run([sys.executable, "-c", REBUILD], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ForgetError(f"dbt build --full-refresh failed (the users' raw rows are already gone; re-run):\n{tail}")
    log.info(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "dbt build --full-refresh done")


# --- 5. the warehouse file itself


def compact_warehouse(settings: Settings, ids: list[str]) -> StoreOutcome:
    """Leave no deleted row in the database's free space: DuckDB is copied into a fresh file; PostgreSQL vacuumed."""
    from pipelines.warehouse.connection import (
        attach_statement,
        catalog_name,
        connect,
        duckdb_connection,
        warehouse_exists,
    )

    if not warehouse_exists(settings):
        return StoreOutcome("warehouse_file", 0, "no warehouse yet")
    if settings.dbt_target == "postgres":
        with connect(settings) as con:
            tables = [t for source in RAW_SOURCES for t in (source.raw_table, source.quarantine_table)]
            tables += ["raw.batches", "monitoring.drift_baseline"]
            tables += [f'{s}."{t}"' for s, t in _user_tables(con) if f"{s}.{t}" not in tables]
            for table in tables:
                con.execute(f"vacuum full {table}")
        return StoreOutcome("warehouse_file", 0, f"VACUUM FULL of {len(tables)} table(s)")
    path = settings.warehouse_path
    fresh = path.with_name(f".{path.stem}.forget-copy.duckdb")
    fresh.unlink(missing_ok=True)
    con = duckdb_connection(str(path), settings)
    try:
        con.execute(attach_statement(fresh, "forget_copy"))
        con.execute(f'copy from database "{catalog_name(path)}" to forget_copy')
        con.execute("detach forget_copy")
    finally:
        con.close()
    before = path.stat().st_size
    os.replace(fresh, path)
    return StoreOutcome("warehouse_file", 0, f"rewritten into a fresh file ({before} -> {path.stat().st_size} bytes)")


# --- 6. model artifacts with per-user rows


def forget_in_models(settings: Settings, ids: list[str], request_id: str) -> tuple[StoreOutcome, list[str]]:
    """Remove the users' rows from every saved model bundle and input example; tag the registry versions touched."""
    from models.base import Recommender

    roots = [settings.mlflow_dir / "artifacts", settings.models_dir]
    removed, bundles, touched_dirs = 0, 0, []
    for root in roots:
        _finish_interrupted_saves(root)
        for npz in sorted(root.rglob("model.npz")) if root.exists() else []:
            bundle = npz.parent
            if bundle.parent.name == "generators":  # a ranker's generator: rewritten with its ranker
                continue
            model = Recommender.load(bundle)
            rows = model.forget_users(ids)
            if rows:
                spare = str(model.user_ids[0]) if len(model.user_ids) else REDACTED
                _save_in_place(model, bundle)
                removed += rows
                bundles += 1
                touched_dirs.append(bundle)
                _replace_examples(bundle, ids, spare)
    for example in _files_named(roots, ("input_example.json", "serving_input_example.json")):
        _redact_text_file(example, ids, replacement=None)
    versions = _tag_model_versions(settings, touched_dirs, request_id)
    note = f"{bundles} bundle(s) rewritten; registry versions {', '.join(versions) or '-'}; {ITEM_ONLY_NOTE}"
    return StoreOutcome("model_artifacts", removed, note), versions


def _finish_interrupted_saves(root: Path) -> None:
    """Complete a `_save_in_place` a crash cut short: the new copy goes into place if it was written, else the
    old one goes back (and this run rewrites it); leftovers are removed."""
    if not root.exists():
        return
    for old in sorted(root.rglob(f"*{SAVE_OLD}")):
        bundle = old.with_name(old.name.removeprefix(".").removesuffix(SAVE_OLD))
        new = old.with_name(f".{bundle.name}{SAVE_TMP}")
        if not bundle.exists():
            os.rename(new if (new / "model.json").exists() else old, bundle)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(new, ignore_errors=True)
    for new in sorted(root.rglob(f"*{SAVE_TMP}")):
        shutil.rmtree(new)


SAVE_TMP, SAVE_OLD = ".forget-tmp", ".forget-old"


def _save_in_place(model, bundle: Path) -> None:
    """Write the model beside its bundle, then swap the two by renames (model.json is written last by save)."""
    staging = bundle.with_name(f".{bundle.name}{SAVE_TMP}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    old = bundle.with_name(f".{bundle.name}{SAVE_OLD}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(bundle, old)
    os.rename(staging, bundle)
    shutil.rmtree(old)


def _replace_examples(bundle: Path, ids: list[str], spare: str) -> None:
    """A logged model's input example names one real user: it names another one (still known) instead."""
    model_dir = bundle.parent.parent if bundle.parent.name == "artifacts" else bundle.parent
    for name in ("input_example.json", "serving_input_example.json"):
        path = model_dir / name
        if path.exists():
            _redact_text_file(path, ids, replacement=spare)


def _files_named(roots: list[Path], names: tuple[str, ...]) -> list[Path]:
    return [p for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.name in names and p.is_file()]


def _tag_model_versions(settings: Settings, bundles: list[Path], request_id: str) -> list[str]:
    """Tag each registered version whose artifacts were rewritten: `forget.<request id>` says what changed."""
    if not bundles or settings.mlflow_tracking_uri is not None:
        return []
    from pipelines.training.tracking import configure

    client = configure(settings)
    paths = [str(bundle) for bundle in bundles]
    versions = []
    for version in client.search_model_versions(f"name = '{settings.registered_model_name}'"):
        # MLflow 3 keeps a version's files under artifacts/models/<model id>/; older ones under the run's folder.
        source = version.source or ""
        owners = {getattr(version, "model_id", None), version.run_id}
        owners.add(source.removeprefix("models:/").split("/")[0] if source.startswith("models:/") else None)
        if any(owner and f"/{owner}/" in path for owner in owners for path in paths):
            client.set_model_version_tag(
                settings.registered_model_name, version.version, f"forget.{request_id}", "user rows removed in place"
            )
            versions.append(str(version.version))
    return sorted(versions, key=int)


# --- 8. anything else that names an id: reports, logs, SQLite databases


def redact_remaining_files(settings: Settings, ids: list[str]) -> StoreOutcome:
    """Replace the ids by `[forgotten]` in every other text file (HTML reports, dbt and Airflow logs, JSON
    results) and every SQLite database under the home, and vacuum those databases."""
    probes = [needle for value in ids for needle in needles(value)]
    replaced, files = 0, []
    skip = {settings.warehouse_path}
    paths = sorted(p for p in settings.home.rglob("*") if p.is_file() and not p.is_symlink())
    # A SQLite database's write-ahead log or journal holds its recent pages: never edited as bytes (that
    # breaks its checksums); the database is redacted through SQLite, then checkpointed and vacuumed.
    databases = {p.with_name(p.name.removesuffix(suffix)) for p in paths for suffix in SQLITE_SIDE_FILES
                 if p.name.endswith(suffix) and file_holds(p, probes)}  # fmt: skip
    for path in paths:
        if path in skip or path.is_relative_to(settings.landing_dir) or path.is_relative_to(settings.published_dir):
            continue
        if path.name.endswith(SQLITE_SIDE_FILES):
            continue
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
        if head.startswith(SQLITE_MAGIC):
            count = _redact_sqlite(path, ids) if path in databases or file_holds(path, probes) else 0
        elif head.startswith((PARQUET_MAGIC, ZIP_MAGIC)):
            continue  # models and publications have their own steps; verification catches anything else
        elif head.startswith(GZIP_MAGIC):
            count = _redact_gzip(path, path.read_bytes(), ids, probes)
        elif file_holds(path, probes):
            count = _redact_text_file(path, ids, replacement=None)
        else:
            count = 0
        if count:
            replaced += count
            files.append(str(path.relative_to(settings.home)))
    return StoreOutcome("reports_and_logs", replaced, ", ".join(files) or "no other file named them")


def _redact_text_file(path: Path, ids: list[str], replacement: str | None) -> int:
    data = path.read_bytes()
    text, count = _redact_bytes(data, ids, replacement)
    if count:
        _replace_bytes(path, text)
    return count


def _redact_bytes(data: bytes, ids: list[str], replacement: str | None) -> tuple[bytes, int]:
    """Every whole-token occurrence of an id replaced (by `replacement`, or `[forgotten]`)."""
    return replace_tokens(data, dict.fromkeys(ids, replacement or REDACTED))


def replace_tokens(data: bytes, replacements: dict[str, str]) -> tuple[bytes, int]:
    """Every whole-token occurrence (not inside a longer id) of each key replaced by its value, and how many.

    Shared by forgetting (ids -> `[forgotten]`) and pseudonymised ingest (id -> pseudonym in
    quarantined raw content, pipelines/privacy/pseudonyms.py).
    """
    import re

    from serving.ids import ID_CHARACTERS

    count = 0
    edge = ID_CHARACTERS.encode()
    for value, replacement in replacements.items():
        pattern = re.compile(rb"(?<![" + edge + rb"])" + re.escape(value.encode()) + rb"(?![" + edge + rb"])")
        data, n = pattern.subn(lambda _, text=replacement.encode(): text, data)
        count += n
    return data, count


def _redact_gzip(path: Path, data: bytes, ids: list[str], probes) -> int:
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError):
        return 0
    if not any(p.found_in(text) for p in probes):
        return 0
    text, count = _redact_bytes(text, ids, None)
    _replace_bytes(path, gzip.compress(text, mtime=0))
    return count


def _redact_sqlite(path: Path, ids: list[str]) -> int:
    """Redact every text value naming an id in every table, then checkpoint the write-ahead log and VACUUM,
    so neither a free page nor an old WAL frame keeps the old text."""
    con = sqlite3.connect(path, timeout=60)
    count = 0
    try:
        with con:
            tables = [name for (name,) in con.execute("select name from sqlite_master where type = 'table'")]
            for table in tables:
                columns = [row[1] for row in con.execute(f'pragma table_info("{table}")')]
                for column in columns:
                    for value in ids:
                        rows = con.execute(
                            f'select rowid, "{column}" from "{table}" where instr(cast("{column}" as text), ?) > 0',
                            [value],
                        ).fetchall()
                        for rowid, old in rows:
                            raw = old if isinstance(old, bytes) else str(old).encode()
                            new, n = _redact_bytes(raw, ids, None)
                            if n:
                                new_value = new if isinstance(old, bytes) else new.decode()
                                con.execute(f'update "{table}" set "{column}" = ? where rowid = ?', [new_value, rowid])
                                count += n
        con.execute("pragma wal_checkpoint(truncate)")
        con.execute("vacuum")
        con.execute("pragma wal_checkpoint(truncate)")
    except sqlite3.OperationalError as error:
        raise ForgetError(f"{path}: cannot redact the SQLite database: {error}") from None
    finally:
        con.close()
    return count


# --- the request: groups of stores, each a DAG task; the CLI runs them all in order


def _models_group(settings: Settings, ids: list[str], request_id: str) -> dict:
    outcome, versions = forget_in_models(settings, ids, request_id)
    return {"stores": [outcome], "model_versions": versions}


def _publications_group(settings: Settings, ids: list[str], request_id: str) -> dict:
    from pipelines.publication.publish import publish_without_users

    redaction = publish_without_users(settings, ids, request_id)
    live_note = f"live: {redaction.live_version}" if redaction.live_version else "nothing published"
    rewritten = ", ".join(redaction.versions_rewritten) or "none"
    outcome = StoreOutcome(
        "publications", redaction.rows_removed, f"{live_note}; older versions rewritten: {rewritten}"
    )
    return {"stores": [outcome], "publication_version": redaction.live_version}


def _warehouse_group(settings: Settings, ids: list[str], request_id: str) -> dict:
    from pipelines.warehouse.connection import warehouse_exists

    if not warehouse_exists(settings):
        return {"stores": [StoreOutcome("raw_events", 0, "no warehouse yet")]}
    return {
        "stores": [
            *forget_in_warehouse(settings, ids),
            forget_in_dbt_models(settings, ids),
            compact_warehouse(settings, ids),
        ]
    }


# Group name -> step. The deny list goes first: serving stops answering with the users' lists at once.
STEP_GROUPS: dict[str, Callable[[Settings, list[str], str], dict]] = {
    "serving_deny_list": lambda settings, ids, _: {"stores": [deny_in_serving(settings, ids)]},
    "landing": lambda settings, ids, _: {"stores": [forget_in_landing(settings, ids)]},
    "warehouse": _warehouse_group,
    "models": _models_group,
    "publications": _publications_group,
    "reports_and_logs": lambda settings, ids, _: {"stores": [redact_remaining_files(settings, ids)]},
}


def _progress_file(settings: Settings, request_id: str) -> Path:
    """What the groups of a request found so far (no ids: stores, counts, versions), for its last step."""
    return settings.privacy_dir / "requests" / f"{request_id}.json"


def run_group(settings: Settings, user_ids: Iterable[str], request_id: str, group: str) -> list[StoreOutcome]:
    """Run one group of stores for a request and record its outcome; running it again replaces the record."""
    ids = with_pseudonyms(settings, checked_ids(user_ids))
    if group not in STEP_GROUPS:
        raise ForgetError(f"no store group {group!r}; the groups are {', '.join(STEP_GROUPS)}")
    settings.ensure_dirs()
    outcome = STEP_GROUPS[group](settings, ids, request_id)
    path = _progress_file(settings, request_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    progress = json.loads(path.read_text()) if path.exists() else {"requested_at": datetime.now(UTC).isoformat()}
    progress.setdefault("groups", {})[group] = {
        **outcome,
        "stores": [asdict(o) for o in outcome["stores"]],
    }
    _replace_bytes(path, json.dumps(progress, indent=2).encode())
    for store in outcome["stores"]:
        log.info("forget %s: %s: %d removed. %s", request_id, store.store, store.rows_removed, store.note)
    return outcome["stores"]


def finish_request(settings: Settings, user_ids: Iterable[str], request_id: str) -> ForgetResult:
    """Verify no file names the ids (unless forget_verify is off), write the audit, fail if an id remains."""
    ids = with_pseudonyms(settings, checked_ids(user_ids))
    key = privacy_key(settings)
    path = _progress_file(settings, request_id)
    progress = json.loads(path.read_text()) if path.exists() else {"groups": {}}
    missing = [group for group in STEP_GROUPS if group not in progress.get("groups", {})]
    if missing:
        raise ForgetError(f"forget {request_id}: group(s) {', '.join(missing)} have not run; run them first")
    result = ForgetResult(request_id, datetime.fromisoformat(progress["requested_at"]))
    result.user_hashes = [keyed_hash(key, value) for value in ids]
    for group in STEP_GROUPS:
        done = progress["groups"][group]
        result.stores += [StoreOutcome(**store) for store in done["stores"]]
        result.model_versions = done.get("model_versions", result.model_versions)
        result.publication_version = done.get("publication_version", result.publication_version)
    if settings.forget_verify:
        log.info("forget %s: searching every file under the home for the ids...", request_id)
        hits = find_ids(settings.home, ids)
        result.verified = not hits
        result.remaining = sorted({_relative(settings, hit) for hit in hits})
    result.finished_at = datetime.now(UTC)
    record_audit(settings, result)
    log.info(result.summary())
    if result.verified is False:
        raise ForgetError(
            f"forget {result.request_id}: an id is still found in {len(result.remaining)} place(s): "
            + "; ".join(result.remaining[:10])
        )
    path.unlink(missing_ok=True)
    return result


def forget_users(
    settings: Settings,
    user_ids: Iterable[str],
    request_id: str | None = None,
    progress: Callable[[str], None] = log.info,
) -> ForgetResult:
    """Forget these users in every store (module docstring), verify, and record the audit.

    Re-runnable: give the same `request_id` to finish a request that died half-way (every group is
    idempotent, so groups that had run find nothing left and the audit keeps their first counts).
    """
    ids = checked_ids(user_ids)
    privacy_key(settings)  # a missing or unsafe secret fails before anything is removed
    request_id = request_id or uuid.uuid4().hex
    path = _progress_file(settings, request_id)
    done = json.loads(path.read_text()).get("groups", {}) if path.exists() else {}
    for group in STEP_GROUPS:
        if group in done:
            progress(f"forget {request_id}: {group}: done before, skipped")
            continue
        progress(f"forget {request_id}: {group}...")
        run_group(settings, ids, request_id, group)  # logs each store's outcome
    return finish_request(settings, ids, request_id)


def _relative(settings: Settings, hit: Hit) -> str:
    return f"{hit.path.relative_to(settings.home)} ({hit.how})"


# --- the audit


def record_audit(settings: Settings, result: ForgetResult) -> None:
    """One row per request in monitoring.forget_requests, and reports/privacy/ (JSON per request + a page)."""
    from pipelines.reports.privacy_report import write_forget_report
    from pipelines.warehouse.connection import connect

    record = result.as_record()
    with connect(settings) as con, con.transaction():
        con.execute("delete from monitoring.forget_requests where request_id = ?", [result.request_id])
        con.execute(
            "insert into monitoring.forget_requests (request_id, requested_at, finished_at, user_hashes, stores, "
            "publication_version, model_versions, verified, remaining_files) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                result.request_id, result.requested_at, result.finished_at, json.dumps(result.user_hashes),
                json.dumps([asdict(o) for o in result.stores]), result.publication_version,
                json.dumps(result.model_versions), result.verified, len(result.remaining),
            ],
        )  # fmt: skip
    result.report = write_forget_report(settings, record)
    log.info("forget %s: audit written to monitoring.forget_requests and %s", result.request_id, result.report)


def audit_records(settings: Settings) -> list[dict]:
    """Every request's audit row, newest first."""
    from pipelines.warehouse.connection import connect

    with connect(settings) as con:
        frame = con.execute("select * from monitoring.forget_requests order by requested_at desc").fetch_df()
    return frame.to_dict("records")


__all__ = [
    "ForgetError",
    "ForgetResult",
    "StoreOutcome",
    "audit_records",
    "checked_ids",
    "finish_request",
    "forget_users",
    "read_id_file",
    "run_group",
]
