"""Mirror the raw layer from DuckDB into PostgreSQL, for the dbt PostgreSQL target.

Ingestion writes DuckDB; the scaled-out configuration can build the dbt project on
PostgreSQL instead. This copies ``raw.events`` and ``raw.items`` across with COPY, in one
transaction, with timestamps as UTC ``timestamp`` values so both engines see the same
instants whatever a session's time zone.
"""

from __future__ import annotations

import io
import logging

from pipelines.settings import Settings
from pipelines.warehouse import connect

log = logging.getLogger(__name__)

RAW_TABLES = {
    "events": (
        "event_id text not null, user_id text not null, item_id text not null, event_type text not null, "
        "event_ts timestamp not null, value double precision, session_id text, context text, source text, "
        "batch_id text, landing_date date, ingested_at timestamp"
    ),
    "items": (
        "item_id text not null, title text, category text, price double precision, in_stock boolean, "
        "is_blocked boolean, created_at timestamp, attributes text"
    ),
}


def pg_connect(settings: Settings):
    import psycopg2

    return psycopg2.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=settings.pg_password or None,
        dbname=settings.pg_database,
    )


def copy_raw_to_postgres(settings: Settings) -> dict[str, int]:
    """Replace raw.* in PostgreSQL with the DuckDB raw layer; return rows copied per table."""
    copied = {}
    with connect(settings, must_exist=True) as duck, pg_connect(settings) as pg, pg.cursor() as cur:
        cur.execute("create schema if not exists raw")
        for table, columns in RAW_TABLES.items():
            names = [c.split()[0] for c in columns.split(", ")]
            select = ", ".join(
                f"timezone('UTC', {n})::timestamp as {n}" if n in ("event_ts", "ingested_at", "created_at") else n
                for n in names
            )
            frame = duck.execute(f"select {select} from raw.{table}").fetch_df()
            cur.execute(f"drop table if exists raw.{table}")
            cur.execute(f"create table raw.{table} ({columns})")
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
            buffer.seek(0)
            cur.copy_expert(f"copy raw.{table} from stdin with (format csv, null '\\N')", buffer)
            copied[table] = len(frame)
    log.info("copied raw layer to postgresql://%s/%s: %s", settings.pg_host, settings.pg_database, copied)
    return copied
