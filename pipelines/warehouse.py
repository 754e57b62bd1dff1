"""The DuckDB warehouse: one place that opens it and makes sure the raw and monitoring layers exist.

DuckDB allows one writing process at a time, so every stage opens the file, does
its transaction and closes it again; nothing holds a connection between tasks.
Connections are always opened read-write: DuckDB refuses a read-only connection to a
file that the same process (dbt, when tasks run in-process) already has open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.settings import Settings

SCHEMA_SQL = Path(__file__).with_name("sql") / "warehouse_schema.sql"


@contextmanager
def connect(settings: Settings, must_exist: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse (creating the raw and monitoring tables if needed); `must_exist` for readers of built data."""
    if must_exist and not settings.warehouse_path.exists():
        raise FileNotFoundError(f"warehouse not found at {settings.warehouse_path}: run ingest first")
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.warehouse_path))
    try:
        con.execute("set TimeZone = 'UTC'")  # event days are UTC days, whatever the machine's zone
        con.execute("set memory_limit = ?", [settings.warehouse_memory_limit])
        con.execute(SCHEMA_SQL.read_text())
        yield con
    finally:
        con.close()


def read_frame(settings: Settings, sql: str, parameters: list | None = None):
    """One query's result as a pandas DataFrame, from a warehouse that must already exist."""
    with connect(settings, must_exist=True) as con:
        return con.execute(sql, parameters or []).fetch_df()
