"""Ingestion: landing files and imported data sets -> the DuckDB raw layer (+ quarantine).

Two entry points share one batch writer (``batch.py``) and one set of rules
(``pipelines/ingest/sql/classify_events.sql``):
- ``ingest_interval``: the ingest DAG's task. Owns the landing days of its data interval
  (``landing/events/date=YYYY-MM-DD/*.jsonl[.gz]|json[.gz]|csv|parquet``; other files and copies of
  a file are reported as skipped) and replaces them whole.
- ``ingest_path``: ``recforge ingest --source <adapter> --path <file or dir>`` for data sets
  (MovieLens, Retailrocket, recforge files anywhere). One batch per file (keyed by its full path),
  replaced on re-run.
- ``ingest_stream`` (``stream.py``): the stream ingest DAG's task and ``recforge ingest-stream``.
  The collector's closed segments (``landing/stream/``), one batch each, by the same rules in the
  time window of their landing day; a segment ingested again replaces itself.
"""

from pipelines.ingest.batch import BatchResult, IngestError
from pipelines.ingest.run import IngestResult, batch_id_for, days_in_interval, ingest_interval, ingest_path
from pipelines.ingest.sources import SOURCES, SchemaError
from pipelines.ingest.stream import ingest_stream

__all__ = [
    "SOURCES",
    "BatchResult",
    "IngestError",
    "IngestResult",
    "SchemaError",
    "batch_id_for",
    "days_in_interval",
    "ingest_interval",
    "ingest_path",
    "ingest_stream",
]
