"""Impressions as their own batches: each sealed landing file of a day is one batch, its slates checked
by their own rules (sql/classify_impressions.sql) and unnested into ``raw.impression_items``.

The landing layout and the record format are serving's (``serving/impressions/format.py``, imported
here, never spelled twice). A day is replaced whole, like events: a re-run or a backfill deletes
that landing day's impression batches, rows and quarantined slates, then ingests its files again.
Every slate of a file ends in exactly one place: accepted (one ``raw.impression_items`` row per
shown item) or ``quarantine.impressions`` (its JSON and a reason: ``missing_request_id``,
``bad_request_id``, ``duplicate_request_id``, ``bad_timestamp``, ``future_timestamp``,
``outside_landing_day``, ``unknown_endpoint``, ``missing_user_id``, ``missing_item_id``,
``id_too_long``, ``id_bad_characters``, ``missing_version``, ``slate_mismatch``, ``bad_propensity``).
A file that is not in the contract's schema stops the run naming the file and the difference. A
day without impression files is normal (serving may be off) and ingests nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pipelines.ingest.batch import BatchResult, IngestError, record_batch
from pipelines.warehouse.connection import Warehouse
from serving.ids import ID_CHARACTERS_REGEX, MAX_ID_LENGTH
from serving.impressions.format import ENDPOINTS, FILE_PREFIX, SCHEMA, SUFFIX, landing_dir
from serving.impressions.request_ids import REQUEST_ID_PATTERN

log = logging.getLogger(__name__)

SCHEMA_WITHOUT_SHADOW = SCHEMA.remove(SCHEMA.get_field_index("shadow"))  # the impression schema's version 1

SOURCE = "impressions"
CLASSIFY_SQL = Path(__file__).resolve().parent / "sql" / "classify_impressions.sql"
REQUEST_ID_REGEX = REQUEST_ID_PATTERN.removeprefix("^").removesuffix("$")


def impression_day_dir(home: Path, day: date) -> Path:
    return landing_dir(home) / f"date={day:%Y-%m-%d}"


def impression_files(home: Path, day: date) -> list[Path]:
    """The sealed impression files of a landing day (staged parts and hidden files are never read)."""
    directory = impression_day_dir(home, day)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{FILE_PREFIX}*{SUFFIX}") if p.is_file())


def check_schema(path: Path, display: str) -> bool:
    """Whether the file is in the impression schema (True) or in its first version, without ``shadow``
    (False: written by a server from before experiments; read as shown slates); anything else is refused."""
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises several kinds for a file that is not Parquet
        raise IngestError(f"{display}: not a readable Parquet file: {error}") from None
    if schema.equals(SCHEMA_WITHOUT_SHADOW, check_metadata=False):
        return False
    if not schema.equals(SCHEMA, check_metadata=False):
        expected = {f.name: str(f.type) for f in SCHEMA}
        found = {f.name: str(f.type) for f in schema}
        differences = sorted(
            f"{name}: expected {expected.get(name, 'nothing')}, found {found.get(name, 'nothing')}"
            for name in expected.keys() | found.keys()
            if expected.get(name) != found.get(name)
        )
        raise IngestError(f"{display}: not in the impression schema (schema_mismatch): {'; '.join(differences)}")
    return True


def ingest_impression_days(warehouse: Warehouse, home: Path, days: list[date], future_tolerance_seconds: int) -> list:
    """Replace the impression batches of each landing day with its files; the caller owns the transaction."""
    results = []
    for day in days:
        forget_impression_day(warehouse, day)
        for path in impression_files(home, day):
            display = str(path.relative_to(home / "landing"))
            results.append(ingest_impression_file(warehouse, path, display, day, future_tolerance_seconds))
    return results


def forget_impression_day(warehouse: Warehouse, day: date) -> None:
    warehouse.execute("delete from raw.impression_items where landing_date = ?", [day])
    warehouse.execute("delete from quarantine.impressions where landing_date = ?", [day])
    warehouse.execute("delete from raw.batches where source = ? and landing_date = ?", [SOURCE, day])


def ingest_impression_file(
    warehouse: Warehouse, path: Path, display: str, day: date, future_tolerance_seconds: int
) -> BatchResult:
    """Classify one sealed file's slates and write them (accepted: unnested; rejected: quarantined)."""
    started = datetime.now(UTC)
    batch_id = f"{SOURCE}:{day.isoformat()}:{path.name}"
    shadow = "" if check_schema(path, display) else ", false as shadow"
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    con = warehouse.sql_engine
    try:
        con.execute(
            "create or replace temp table incoming_impressions as "
            f"select row_number() over () as row_number, *{shadow} from read_parquet(?)",
            [str(path)],
        )
    except duckdb.Error as error:
        raise IngestError(f"{display}: cannot read the impression file: {error}") from error
    con.execute(
        CLASSIFY_SQL.read_text(),
        {
            "request_id_regex": REQUEST_ID_REGEX,
            "latest_allowed": midnight + timedelta(days=1, seconds=future_tolerance_seconds),
            "earliest_allowed": midnight,
            "endpoints": list(ENDPOINTS),
            "max_id_length": MAX_ID_LENGTH,
            "id_characters": ID_CHARACTERS_REGEX,
        },
    )
    rows_input = con.execute("select count(*) from incoming_impressions").fetchone()[0]
    by_reason = dict(
        con.execute(
            "select reason, count(*) from classified_impressions where reason is not null group by reason order by 1"
        ).fetchall()
    )
    accepted = con.execute("select count(*) from classified_impressions where reason is null").fetchone()[0]
    quarantined = sum(by_reason.values())
    if accepted + quarantined != rows_input:
        raise IngestError(f"{display}: {rows_input} slates in but {accepted} accepted + {quarantined} quarantined")
    warehouse.insert_from_engine(
        "raw.impression_items",
        """
        with accepted as (select * from classified_impressions where reason is null),
        shown as (
            select *, unnest(generate_series(1, len(item_ids))) as position from accepted where len(item_ids) > 0
        )
        select request_id, served_at, endpoint, user_id, anchor_item_id, coalesce(fallback, false) as fallback,
               version, experiment, variant, len(item_ids) as slate_size, cast(position as integer) as position,
               item_ids[position] as item_id, cast(scores[position] as double) as score,
               propensities[position] as propensity, shadow, ? as batch_id, ? as landing_date, ? as ingested_at
        from shown
        """,
        [batch_id, day, started],
    )
    warehouse.insert_from_engine(
        "quarantine.impressions",
        """
        select ? as batch_id, ? as landing_date, ? as file, cast(row_number as integer) as row_number, reason,
               cast(to_json(struct_pack(request_id, served_at, endpoint, user_id, anchor_item_id, fallback, version,
                                        experiment, variant, shadow, item_ids, scores, propensities))
                    as varchar) as raw,
               ? as ingested_at
        from classified_impressions where reason is not null
        """,
        [batch_id, day, display, started],
    )
    for table in ("incoming_impressions", "classified_impressions"):
        con.execute(f"drop table if exists {table}")
    result = record_batch(
        warehouse, batch_id, SOURCE, midnight, midnight + timedelta(days=1), display, day, started,
        rows_input, accepted, quarantined, by_reason, 0,
    )  # fmt: skip
    log.info("impressions %s", result.summary())
    return result
