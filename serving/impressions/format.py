"""The impression contract: what serving logs about every slate it returned, and where it lands.

Serving writes it (``serving.impressions.log``) and ingest reads it; both import this module, so
the columns, their types, the file layout and the interval rule are spelled once.

Grain: one row per answer (slate), its shown items as lists in position order (``item_ids[0]``
is position 1). The mart at slate-item grain unnests them in the warehouse; landing them one row
per answer keeps the per-answer fields (request id, user, version) written once, which halved
the writer's cost against one row per shown item.

Why Parquet and not JSON lines: the writer builds a batch column by column from the arrays the
answer was cut from (item rows and scores held by the publication), so the per-answer work left
in Python is one tuple; JSON lines would need a string per item per answer, a cost of the same
order as the answer itself (the benchmark's target is >= 90% of the throughput without
logging). Parquet also keeps the types (timestamps, float32 scores) that ingest would otherwise
parse back. The price: a Parquet file is readable only once its footer is written, so the
writer stages each flush as a small Arrow IPC part (a tenth of Parquet's cost to write) and
seals an interval's parts into one Parquet file when the interval is over (a crash loses at most
the unflushed queue; the next server start seals the parts left behind).

Layout under ``RECFORGE_HOME/landing/impressions/`` (the landing layout of events, per UTC day)::

    date=YYYY-MM-DD/impressions-<interval start, YYYYMMDDTHHMMSSZ>-<process>.parquet   sealed, read by ingest
    .open/<process>/<interval start>/part-<n>.arrow                                    staged, never read

``<process>`` is the serving process's request-id prefix, so a file names the process whose
request ids it holds. Intervals divide a UTC day (``impressions_interval_seconds`` divides
86,400), so a file never spans two landing days.

In the scaled configuration every flushed batch (per interval) goes to a Redis Stream as one
entry: ``interval`` (the interval start as above), ``process``, ``rows`` and ``arrow`` (the
batch in this schema as an Arrow IPC stream; ``from_ipc_stream`` reads it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

SCHEMA_VERSION = "2"  # 2: the shadow column
IMPRESSIONS_DIR = "impressions"  # under landing/
OPEN_DIR = ".open"  # staged parts; the leading dot keeps it out of every landing-day listing
FILE_PREFIX = "impressions-"
SUFFIX = ".parquet"
PART_SUFFIX = ".arrow"
STREAM_FIELD = "arrow"
SECONDS_PER_DAY = 86_400
ENDPOINTS = ("recommendations", "similar_items")

# The propensity contract (serving/exploration.py makes them, pipelines/experiments/off_policy.py weighs by
# them): per shown item, in position order, the probability that the logging policy shows that item at that
# position for this request, in (0, 1]. Recommendations answers always carry them (1.0 everywhere without
# exploration, or for a deterministic answer such as a session blend); similar-items answers are not
# explored and carry 1.0 too; shadow slates, never shown, carry null.
PROPENSITIES = "propensities"

SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("served_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),  # one of ENDPOINTS
        pa.field("user_id", pa.string()),  # recommendations: the user; similar items: null
        pa.field("anchor_item_id", pa.string()),  # similar items: the requested item; recommendations: null
        pa.field("fallback", pa.bool_(), nullable=False),  # the user was unknown: the popularity list
        pa.field("version", pa.string(), nullable=False),  # the publication that answered
        pa.field("experiment", pa.string()),  # the running experiment that routed the user; null: none
        pa.field("variant", pa.string()),  # its variant, "holdback", or a shadow variant's name; null: none
        # True: a shadow variant's slate, computed for the same request (same request_id) and never shown.
        pa.field("shadow", pa.bool_(), nullable=False),
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),  # shown, in position order
        pa.field("scores", pa.list_(pa.float32()), nullable=False),  # the answer's score of each
        pa.field(PROPENSITIES, pa.list_(pa.float64())),  # see PROPENSITIES; null for shadow slates
    ],
    metadata={"recforge.impressions.schema_version": SCHEMA_VERSION},
)
COLUMNS = tuple(SCHEMA.names)
# Columns with few distinct values per file; request ids and timestamps are unique (a dictionary only costs).
DICTIONARY_COLUMNS = [
    "endpoint",
    "user_id",
    "anchor_item_id",
    "version",
    "experiment",
    "variant",
    "item_ids.list.element",
]


def to_ipc_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc_stream(data: bytes) -> pa.Table:
    """A Redis Stream entry's batch (its ``arrow`` field) as a table in the contract's schema."""
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise ValueError(f"an impression batch does not have the impression schema: {table.schema}")
    return table


def landing_dir(home: Path) -> Path:
    return home / "landing" / IMPRESSIONS_DIR


def interval_tag(interval_start: int) -> str:
    """``20261203T070000Z`` for an interval starting at that second (UTC epoch seconds)."""
    return datetime.fromtimestamp(interval_start, UTC).strftime("%Y%m%dT%H%M%SZ")


def interval_start_of(tag: str) -> int:
    return int(datetime.strptime(tag, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())


def day_dir(root: Path, interval_start: int) -> Path:
    """The landing day of an interval (``date=YYYY-MM-DD``, as events land)."""
    return root / f"date={datetime.fromtimestamp(interval_start, UTC):%Y-%m-%d}"


def sealed_name(interval_start: int, process: str, sequence: int = 0) -> str:
    """The file of one process's interval; a later file for the same interval (rare) gets ``-<n>``."""
    tail = f"-{sequence}" if sequence else ""
    return f"{FILE_PREFIX}{interval_tag(interval_start)}-{process}{tail}{SUFFIX}"


def check_interval_seconds(seconds: int) -> int:
    if seconds < 1 or SECONDS_PER_DAY % seconds:
        raise ValueError(f"{seconds} does not divide a day ({SECONDS_PER_DAY} s) into whole intervals")
    return seconds
