"""The warehouse every stage reads and writes: DuckDB or PostgreSQL, chosen by ``settings.dbt_target``.

One small interface (`Warehouse`) so that ingest, validation, drift, training, publication,
reports and status run unchanged on either engine, against the database dbt builds in:

- ``execute(sql, params)`` returns a result with ``fetchone``/``fetchall``/``fetch_df``;
  callers write ``?`` placeholders and portable SQL (one DDL file serves both engines).
- ``record_batches(sql, params, rows)`` streams a large result as Arrow record batches, so a reader
  of the event grain holds arrays, never a frame of every row (DuckDB: its own Arrow export;
  PostgreSQL: a server-side cursor, ``rows`` at a time).
- ``append_frame(table, frame)`` bulk-loads a DataFrame (DuckDB: insert from the registered
  frame; PostgreSQL: one COPY of a CSV Arrow writes).
- ``transaction()`` makes a block all-or-nothing; outside one, every statement commits alone.
- ``sql_engine`` is a DuckDB connection for the SQL that stays in DuckDB whatever the target
  (ingest's classification rules): the warehouse itself on DuckDB, an in-memory database on
  PostgreSQL, so the PostgreSQL target never creates ``warehouse.duckdb``.

DuckDB allows one writing process at a time, so every stage opens the warehouse, does its
transaction and closes it again; nothing holds a connection between tasks. DuckDB
connections are always opened read-write: DuckDB refuses a read-only connection to a file
that the same process (dbt, when tasks run in-process) already has open.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.settings import Settings

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
SCHEMA_FINGERPRINT = hashlib.sha256(SCHEMA_SQL.read_bytes()).hexdigest()  # what monitoring.schema_applied records
# Any constant will do: it serialises concurrent schema creation, which PostgreSQL's
# `create ... if not exists` does not (two sessions can both find the table missing).
SCHEMA_LOCK = 7_302_421


class WarehouseNotFound(FileNotFoundError):
    """A reader of built data found no warehouse: ingest has not run for these settings."""


def location(settings: Settings) -> str:
    """Where the warehouse of these settings lives, for messages and `recforge status`."""
    if settings.dbt_target == "postgres":
        return f"postgresql://{settings.pg_host}:{settings.pg_port}/{settings.pg_database}"
    return str(settings.warehouse_path)


# Rows per row group of the warehouse file. A day appended to a table rewrites the table's last, partial row group
# at the commit (and merges partial groups), so DuckDB's default (122,880 rows, about two landing days of the 1M
# benchmark log) made a daily run rewrite about a day of history; at 32,768 a day rewrites at most that many rows,
# and compression is the same (benchmarks/README.md, "Round 9"). DuckDB does not keep the size in the file: every
# connection that writes must attach with it (`duckdb_connection`, and dbt's profile through `dbt_environment`),
# or its commit merges the small groups back.
ROW_GROUP_SIZE = 32_768


def duckdb_connection(database: str, settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection configured as every stage expects (UTC days, the memory limit, ROW_GROUP_SIZE)."""
    con = duckdb.connect(database) if database == ":memory:" else attached_file(Path(database))
    con.execute("set TimeZone = 'UTC'")  # event days are UTC days, whatever the machine's zone
    con.execute("set memory_limit = ?", [settings.warehouse_memory_limit])
    return con


def catalog_name(path: Path) -> str:
    """The name DuckDB gives a database file it opens by path (the first non-empty dot-separated part of the
    file name: ``warehouse.duckdb`` -> ``warehouse``); the warehouse keeps it when attached."""
    return path.name.lstrip(".").split(".")[0]


def shared_instance(path: Path) -> str:
    """The in-memory database a process attaches `path` to: DuckDB shares a named in-memory database between
    the connections of one process, as it shares a file opened by path, so recforge's connections and an
    in-process dbt run (its profile names the same instance) are one database, not two claims on one file."""
    return f":memory:{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"


def temp_directory(path: Path) -> str:
    """Where DuckDB spills for the database file `path`: beside it, as DuckDB does for a file opened by path."""
    return f"{path.resolve()}.tmp"


def instance_config(path: Path) -> dict[str, str]:
    """The configuration every connection to `shared_instance(path)` passes, recforge's and dbt's (its profile's
    ``config_options``): the spill directory (`temp_directory`; an in-memory engine would spill to ./.tmp).

    Given at connect, never by ``SET``: DuckDB refuses to set an engine's temp directory again once it has
    spilled there, even to the same path ("Cannot switch temporary directory after the current one has been
    used"), which a second connection's ``SET`` did at the 1M-user scale. DuckDB also refuses a connection to a
    running named engine with another configuration, so both sides pass exactly this."""
    return {"temp_directory": temp_directory(path)}


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def attach_statement(path: Path, alias: str) -> str:
    """The ATTACH of the DuckDB file `path` as `alias` with the warehouse's ROW_GROUP_SIZE (path and alias quoted),
    for every connection that writes a warehouse file: the warehouse itself, and the fresh copy forgetting writes."""
    literal = str(path.resolve()).replace("'", "''")
    return f"attach if not exists '{literal}' as {_identifier(alias)} (row_group_size {ROW_GROUP_SIZE})"


def attached_file(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection to the DuckDB file `path`: attached to `shared_instance` under `catalog_name` with
    ROW_GROUP_SIZE and in use, so unqualified names resolve as with `duckdb.connect(path)`."""
    con = duckdb.connect(shared_instance(path), config=instance_config(path))
    try:
        con.execute(attach_statement(path, catalog_name(path)))
        con.execute(f"use {_identifier(catalog_name(path))}")
    except BaseException:
        con.close()
        raise
    return con


# How much DuckDB log an open connection's appends may hold before a checkpoint (see DuckDBWarehouse.appending):
# committed rows wait in memory until then, so this bounds a backfill's memory as well as its rewrites.
APPEND_CHECKPOINT_THRESHOLD = "1 GiB"
# A connection that closes after its appends checkpoints at the commit (see DuckDBWarehouse.appending).
CLOSING_CHECKPOINT_THRESHOLD = "0 B"

RECORD_BATCH_ROWS = 1_000_000  # rows per Arrow batch of `record_batches`: bounded memory whatever the result's size


class Warehouse(ABC):
    """What both engines offer; `connect` opens the right one."""

    dialect: str

    @abstractmethod
    def execute(self, sql: str, params=None):
        """Run one statement (`?` placeholders); the result has fetchone, fetchall and fetch_df."""

    @abstractmethod
    def record_batches(self, sql: str, params=None, rows: int = RECORD_BATCH_ROWS) -> Iterator:
        """The result of one query as ``pyarrow.RecordBatch`` es of at most ``rows`` rows each."""

    @abstractmethod
    def executemany(self, sql: str, rows: list) -> None:
        """Run one statement once per row of parameters."""

    @abstractmethod
    def append_frame(self, table: str, frame: pd.DataFrame) -> None:
        """Insert `frame`'s rows into `table`, matching columns by name."""

    @property
    @abstractmethod
    def sql_engine(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection where SQL that stays in DuckDB (ingest's rules) runs."""

    @abstractmethod
    def insert_from_engine(self, table: str, select_sql: str, params: list) -> None:
        """Insert what `select_sql` (run on `sql_engine`) returns into `table`, by column alias."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection(s)."""

    @contextmanager
    def appending(self, closing: bool) -> Iterator[Warehouse]:
        """A block that appends many rows (an ingest interval): where the engine lets us, each is written once.

        `closing`: the connection closes right after the block. The default does nothing (PostgreSQL
        writes its rows as they come); DuckDB's version says what it changes and why.
        """
        yield self

    @contextmanager
    def transaction(self) -> Iterator[Warehouse]:
        """All statements of the block commit together or not at all (a failed ingest run leaves no trace)."""
        self.execute("begin transaction")
        try:
            yield self
        except BaseException:
            self.execute("rollback")
            raise
        self.execute("commit")


class DuckDBWarehouse(Warehouse):
    """The embedded default: the file RECFORGE_HOME/warehouse.duckdb, which dbt-duckdb builds in too."""

    dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def execute(self, sql: str, params=None):
        return self.con.execute(sql, params or [])

    def record_batches(self, sql: str, params=None, rows: int = RECORD_BATCH_ROWS) -> Iterator:
        yield from self.con.sql(sql, params=params or None).to_arrow_reader(rows)

    def executemany(self, sql: str, rows: list) -> None:
        self.con.executemany(sql, rows)

    def append_frame(self, table: str, frame: pd.DataFrame) -> None:
        self.con.register("appended_rows", frame)
        try:
            columns = ", ".join(frame.columns)
            self.con.execute(f"insert into {table} ({columns}) select {columns} from appended_rows")
        finally:
            self.con.unregister("appended_rows")

    @property
    def sql_engine(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def insert_from_engine(self, table: str, select_sql: str, params: list) -> None:
        # Same database: one insert-select, no rows pass through Python.
        columns = [d[0] for d in self.con.execute(f"select * from ({select_sql}) limit 0", params).description]
        self.con.execute(f"insert into {table} ({', '.join(columns)}) {select_sql}", params)

    @contextmanager
    def appending(self, closing: bool) -> Iterator[Warehouse]:
        """DuckDB writes a commit to its log (WAL) and again into the file when it checkpoints (at 16 MiB
        of log, and on close). A connection about to close checkpoints at the commit instead (DuckDB
        then skips the log for a large commit: the day's rows are written once, not twice); a
        connection that stays open for more blocks (a backfill's) puts its checkpoints off up to
        APPEND_CHECKPOINT_THRESHOLD of log, so the tail row group is not recompressed every 16 MiB.
        The caller's setting is restored after the block."""
        previous = self.con.execute("select current_setting('checkpoint_threshold')").fetchall()[0][0]
        threshold = CLOSING_CHECKPOINT_THRESHOLD if closing else APPEND_CHECKPOINT_THRESHOLD
        self.con.execute(f"set checkpoint_threshold = '{threshold}'")
        try:
            yield self
        finally:
            self.con.execute(f"set checkpoint_threshold = '{previous}'")

    def close(self) -> None:
        self.con.close()


def postgres_placeholders(sql: str) -> str:
    """`?` placeholders as psycopg2's `%s`, and every literal `%` doubled.

    A `?` inside a string literal ('...'), a quoted identifier ("..."), a line comment (-- ...) or a
    block comment (/* ... */) is text, not a placeholder; psycopg2 reads `%` everywhere, so it is
    doubled everywhere.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"":
            end = sql.find(char, i + 1)
            while end != -1 and sql[end + 1 : end + 2] == char:  # '' or "" escapes the quote
                end = sql.find(char, end + 2)
            end = n if end == -1 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
        else:
            out.append("%s" if char == "?" else "%%" if char == "%" else char)
            i += 1
            continue
        out.append(sql[i:end].replace("%", "%%"))
        i = end
    return "".join(out)


# PostgreSQL type OIDs that DuckDB's fetch_df returns as datetime64, so frames look alike on both.
PG_DATE, PG_TIMESTAMP, PG_TIMESTAMPTZ, PG_NUMERIC = 1082, 1114, 1184, 1700


class PostgresResult:
    """The rows of one statement, with DuckDB's fetch methods."""

    def __init__(self, cursor):
        self.description = cursor.description
        self.rows = cursor.fetchall() if cursor.description else []

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return list(self.rows)

    def fetch_df(self) -> pd.DataFrame:
        names = [d.name for d in self.description]
        frame = pd.DataFrame.from_records(self.rows, columns=names, coerce_float=True)
        for column, name in zip(self.description, names, strict=True):
            if column.type_code in (PG_DATE, PG_TIMESTAMP):
                frame[name] = pd.to_datetime(frame[name])
            elif column.type_code == PG_TIMESTAMPTZ:
                frame[name] = pd.to_datetime(frame[name], utc=True)
            elif column.type_code == PG_NUMERIC:
                frame[name] = pd.to_numeric(frame[name])
        return frame


class PostgresWarehouse(Warehouse):
    """The database RECFORGE_PG_DATABASE, which dbt-postgres builds in with RECFORGE_DBT_TARGET=postgres."""

    dialect = "postgres"

    def __init__(self, pg, settings: Settings):
        self.pg = pg
        self.settings = settings
        self._engine: duckdb.DuckDBPyConnection | None = None

    def execute(self, sql: str, params=None) -> PostgresResult:
        with self.pg.cursor() as cur:
            cur.execute(postgres_placeholders(sql), list(params or []))
            return PostgresResult(cur)

    def record_batches(self, sql: str, params=None, rows: int = RECORD_BATCH_ROWS) -> Iterator:
        """A named (server-side) cursor fetches ``rows`` at a time; each chunk becomes one Arrow batch.

        WITH HOLD because the connection is in autocommit (psycopg2 refuses a plain named cursor then);
        the explicit transaction gives the statement one snapshot.
        """
        import uuid

        import pyarrow as pa

        with self.transaction(), self.pg.cursor(name=f"batches_{uuid.uuid4().hex}", withhold=True) as cur:
            cur.itersize = rows
            cur.execute(postgres_placeholders(sql), list(params or []))
            while chunk := cur.fetchmany(rows):
                names = [d.name for d in cur.description]
                yield pa.RecordBatch.from_pydict({n: [row[i] for row in chunk] for i, n in enumerate(names)})

    def executemany(self, sql: str, rows: list) -> None:
        with self.pg.cursor() as cur:
            cur.executemany(postgres_placeholders(sql), rows)

    def append_frame(self, table: str, frame: pd.DataFrame) -> None:
        """One COPY, its CSV written by Arrow (no Python loop over rows): a NULL is an unquoted empty
        field and every other value is quoted, so an empty string stays a string."""
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        buffer = io.BytesIO()
        options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
        pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer, options)
        buffer.seek(0)
        with self.pg.cursor() as cur:
            cur.copy_expert(f"copy {table} ({', '.join(frame.columns)}) from stdin with (format csv)", buffer)

    @property
    def sql_engine(self) -> duckdb.DuckDBPyConnection:
        if self._engine is None:
            self._engine = duckdb_connection(":memory:", self.settings)
        return self._engine

    def insert_from_engine(self, table: str, select_sql: str, params: list) -> None:
        self.append_frame(table, self.sql_engine.execute(select_sql, params).fetch_df())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self.pg.close()


def postgres_connection(settings: Settings):
    """A psycopg2 connection to the settings' database: autocommit, UTC, JSON left as text (as DuckDB does)."""
    import psycopg2
    import psycopg2.extras

    pg = psycopg2.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=settings.pg_password or None,
        dbname=settings.pg_database,
        options="-c TimeZone=UTC",
    )
    pg.autocommit = True  # transactions are explicit: Warehouse.transaction()
    psycopg2.extras.register_default_json(pg, loads=lambda text: text)
    psycopg2.extras.register_default_jsonb(pg, loads=lambda text: text)
    return pg


def _open(settings: Settings, must_exist: bool) -> Warehouse:
    if settings.dbt_target == "postgres":
        warehouse: Warehouse = PostgresWarehouse(postgres_connection(settings), settings)
        try:
            if must_exist and warehouse.execute("select to_regclass('raw.batches')").fetchone()[0] is None:
                raise WarehouseNotFound(f"warehouse not found at {location(settings)}: run ingest first")
            _apply_schema(warehouse)
        except BaseException:
            warehouse.close()
            raise
        return warehouse
    if must_exist and not settings.warehouse_path.exists():
        raise WarehouseNotFound(f"warehouse not found at {location(settings)}: run ingest first")
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    warehouse = DuckDBWarehouse(duckdb_connection(str(settings.warehouse_path), settings))
    try:
        _apply_schema(warehouse)
    except BaseException:
        warehouse.close()
        raise
    return warehouse


def _schema_is_current(warehouse: Warehouse) -> bool:
    """Whether schema.sql, as it is now, was applied to this warehouse (monitoring.schema_applied says so)."""
    missing_table = (duckdb.CatalogException,)
    if warehouse.dialect == "postgres":
        import psycopg2.errors

        missing_table = (psycopg2.errors.UndefinedTable,)
    try:
        return warehouse.execute("select fingerprint from monitoring.schema_applied").fetchall() == [
            (SCHEMA_FINGERPRINT,)
        ]
    except missing_table:
        return False


def _apply_schema(warehouse: Warehouse) -> None:
    """Create the raw and monitoring tables (and add columns) unless this very schema.sql was applied already.

    The file is idempotent (``if not exists``) but not free: about 7 ms of DDL on DuckDB at every open, a
    noticeable part of a daily ingest task. It runs in one transaction with its fingerprint recorded last,
    so a recorded fingerprint means the whole file was applied; a changed file has a new fingerprint and
    runs again. PostgreSQL serialises concurrent appliers (SCHEMA_LOCK: its ``if not exists`` does not).
    The fingerprint is of the file, not of the database: a table dropped by hand comes back only when the
    file next changes (nothing in recforge drops these tables; delete the row of monitoring.schema_applied
    to force a re-apply).
    """
    if _schema_is_current(warehouse):
        return
    with warehouse.transaction():
        if warehouse.dialect == "postgres":
            warehouse.execute("select pg_advisory_xact_lock(?)", [SCHEMA_LOCK])
        warehouse.execute(SCHEMA_SQL.read_text())
        warehouse.execute("delete from monitoring.schema_applied")
        warehouse.execute(
            "insert into monitoring.schema_applied (fingerprint, applied_at) values (?, current_timestamp)",
            [SCHEMA_FINGERPRINT],
        )


@contextmanager
def connect(settings: Settings, must_exist: bool = False) -> Iterator[Warehouse]:
    """Open the warehouse (creating the raw and monitoring tables if needed); `must_exist` for readers of built data."""
    warehouse = _open(settings, must_exist)
    try:
        yield warehouse
    finally:
        warehouse.close()


def warehouse_exists(settings: Settings) -> bool:
    """Whether ingest has created the warehouse of these settings (without creating it)."""
    try:
        with connect(settings, must_exist=True):
            return True
    except WarehouseNotFound:
        return False


def read_frame(settings: Settings, sql: str, parameters: list | None = None) -> pd.DataFrame:
    """One query's result as a pandas DataFrame, from a warehouse that must already exist."""
    with connect(settings, must_exist=True) as warehouse:
        return warehouse.execute(sql, parameters).fetch_df()
