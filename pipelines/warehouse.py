"""The DuckDB warehouse: one place that opens it and makes sure the raw layer exists.

DuckDB allows one writing process at a time, so every stage opens the file, does
its transaction and closes it again; nothing holds a connection between tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.settings import Settings

RAW_SCHEMA_SQL = Path(__file__).with_name("sql") / "raw_schema.sql"


@contextmanager
def connect(settings: Settings, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not settings.warehouse_path.exists():
        raise FileNotFoundError(f"warehouse not found at {settings.warehouse_path}: run ingest first")
    con = duckdb.connect(str(settings.warehouse_path), read_only=read_only)
    try:
        if not read_only:
            con.execute(RAW_SCHEMA_SQL.read_text())
        yield con
    finally:
        con.close()
