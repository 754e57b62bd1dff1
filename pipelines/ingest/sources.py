"""Source adapters: turn one input file into the canonical rows that the ingest rules classify.

Every adapter fills the DuckDB temp table ``incoming`` with the same columns:

    line_number  where the row is in its file (1-based; for CSV the header is line 1)
    raw          the row as it arrived: the original line for JSONL, the row's fields as a
                 JSON object (all values as text) for CSV and Parquet
    parse_error  why the row could not even be read (line_too_long, malformed_row, malformed_json,
                 invalid_utf8, schema_mismatch), else NULL
    event_id, user_id, item_id, event_type, event_ts (timestamptz, NULL if unparseable),
    value (double), session_id, context (JSON text: the row's context plus unknown columns)

and may provide the item catalog that comes with the data. Adapters only translate; every
accept / quarantine decision is made once, in ``pipelines/ingest/sql/classify_events.sql``.

Formats: recforge's own JSONL, CSV and Parquet (the canonical columns), MovieLens
(``ratings.csv`` of ml-latest-small and the larger csv releases, ``ratings.dat`` of ml-1m / ml-10m,
``u.data`` of ml-100k, each with its movies / items file), Retailrocket
(``timestamp,visitorid,event,itemid,transactionid``).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.ingest.jsonl_fields import split_lines
from serving.events import EVENT_FIELDS as CANONICAL_COLUMNS
from serving.events import REQUIRED_FIELDS as REQUIRED_COLUMNS

log = logging.getLogger(__name__)
CATALOG_COLUMNS = ["item_id", "title", "category", "price", "in_stock", "is_blocked", "created_at", "attributes"]


class SchemaError(ValueError):
    """A file that cannot be ingested at all: a required column is missing. Names file and column."""


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def canonical_projection(field, context: str) -> str:
    """The canonical columns from `field(name)` (a SQL text expression per column) and a context expression."""
    return (
        f"{field('event_id')} as event_id, {field('user_id')} as user_id, {field('item_id')} as item_id, "
        f"{field('event_type')} as event_type, try_cast({field('event_ts')} as timestamptz) as event_ts, "
        f"try_cast({field('value')} as double) as value, {field('session_id')} as session_id, {context} as context"
    )


def sql_string(text: str) -> str:
    """Text as a SQL string literal (DuckDB's table functions take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def path_literal(path: Path) -> str:
    return sql_string(str(path))


def _sql_list(values) -> str:
    return "(" + ", ".join(sql_string(v) for v in values) + ")"


# --- recforge JSONL -------------------------------------------------------------------------


RAW_PREFIX_CHARS = 1000  # what quarantine keeps of a line_too_long row: enough to recognise it, never megabytes


def open_events(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped on the fly for ``.gz`` (read as a stream: never decompressed whole)."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


READ_CHUNK_BYTES = 1 << 20


class _Cut(bytes):
    """The first bytes of a line longer than the limit; the rest was skipped, never held."""


def _line_blocks(stream: BinaryIO, max_line_bytes: int) -> Iterator[bytes | list[bytes]]:
    """The stream's lines, one block per chunk read: the bytes of whole lines joined by their newlines
    (the usual case: never split in Python), or, where a line was cut, a list of lines whose first
    is a `_Cut`.

    Memory stays near one chunk plus one line of at most `max_line_bytes`: a line that grows past
    the limit is cut to its first bytes (a `_Cut`) and the rest of it is skipped as it streams by.
    A block may still hold a line over the limit that began and ended within it: the reader checks.
    """
    keep = RAW_PREFIX_CHARS * 4  # bytes enough for RAW_PREFIX_CHARS characters of any UTF-8
    pending, cut = b"", False  # the start of a line whose end has not been read yet; is it over the limit?
    while chunk := stream.read(READ_CHUNK_BYTES):
        end = chunk.rfind(b"\n")
        if end < 0:  # no line ends in this chunk: it all belongs to the pending line
            if not cut:
                pending += chunk
                if len(pending) > max_line_bytes + 1:  # + 1: a line's own "\r"
                    pending, cut = pending[:keep], True
            continue
        if cut:  # the cut line ends here: its rest (up to the first newline) is skipped
            yield [_Cut(pending), *chunk[:end].split(b"\n")[1:]]
        else:
            yield pending + chunk[:end]
        pending, cut = chunk[end + 1 :], False
        if len(pending) > max_line_bytes + 1:
            pending, cut = pending[:keep], True
    if cut:
        yield [_Cut(pending)]
    elif pending:
        yield pending


_PRINTABLE_ASCII = "[\\x21-\\x7e]"  # a line holding one of these is not blank; only the others are looked at


def _split_block(block: bytes, max_line_bytes: int) -> pa.Array | None:
    """The lines of a block as Arrow strings, split by Arrow; None if a line is over the limit or is
    not valid UTF-8 (that block is read line by line)."""
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int64))
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(block)])
    lines = pc.list_flatten(pc.split_pattern(whole, b"\n"))
    if pc.max(pc.binary_length(lines)).as_py() > max_line_bytes:
        return None
    try:
        return lines.cast(pa.large_string())  # validates UTF-8
    except pa.ArrowInvalid:
        return None


def _block_of_lines(lines: pa.Array, first: int, has_cr: bool) -> pa.Table:
    """The non-blank `lines` of a block with their numbers (`first` is the first line's), without a
    Python step per line. A line is blank as for ``str.isspace`` (or empty); only lines without a
    printable ASCII character (rare) are checked by Python, so the rule stays Python's. `has_cr`: the
    block holds a "\\r" (asked of its bytes, which is faster than asking Arrow)."""
    if has_cr:
        lines = pc.replace_substring_regex(lines, "\r$", "")
    numbers = pa.array(np.arange(first, first + len(lines), dtype=np.int64))
    maybe_blank = pc.invert(pc.match_substring_regex(lines, _PRINTABLE_ASCII))
    if pc.any(maybe_blank).as_py():
        candidates = np.flatnonzero(maybe_blank.to_numpy(zero_copy_only=False))
        blank = [int(i) for i in candidates if not (line := lines[int(i)].as_py()) or line.isspace()]
        if blank:
            keep = np.ones(len(lines), dtype=bool)
            keep[blank] = False
            lines, numbers = lines.filter(pa.array(keep)), numbers.filter(pa.array(keep))
    return pa.table(
        {"line_number": numbers, "raw": lines.cast(pa.string()), "read_error": pa.nulls(len(lines), pa.string())}
    )


def line_row(line: bytes, max_line_bytes: int) -> tuple[str, str | None] | None:
    """One line (without its newline) by the reader's rules: (its raw text, its read error or None), or
    None for a blank line. Over the limit (or a `_Cut`): its first RAW_PREFIX_CHARS characters and
    ``line_too_long``; not UTF-8: backslash escapes and ``invalid_utf8``; a final "\\r" is dropped."""
    error = None
    if type(line) is _Cut or len(line.removesuffix(b"\r")) > max_line_bytes:
        error, line = "line_too_long", line[: RAW_PREFIX_CHARS * 4]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text, error = line.decode("utf-8", errors="backslashreplace"), error or "invalid_utf8"
    if error == "line_too_long":
        text = text[:RAW_PREFIX_CHARS]
    text = text.removesuffix("\r")
    if error is None and not text.strip():
        return None
    return text, error


def _read_lines(path: Path, max_line_bytes: int) -> pa.Table:
    """Non-blank lines with their line numbers; invalid UTF-8 and over-long lines are kept, flagged.

    Read in chunks (see `_line_blocks`), so a line longer than `max_line_bytes` is never held
    whole: its first characters are kept (as its raw text) with ``line_too_long``. A chunk of
    short, valid lines is split and validated by Arrow (`_split_block`, `_block_of_lines`); only a
    chunk with a bad line is read line by line.
    """
    parts: list[pa.Table] = []
    numbers, texts, errors = [], [], []  # the lines of chunks read line by line, since the last Arrow block

    def flush() -> None:
        if numbers:
            parts.append(pa.table({"line_number": pa.array(numbers, pa.int64()), "raw": pa.array(texts, pa.string()),
                                   "read_error": pa.array(errors, pa.string())}))  # fmt: skip
            numbers.clear(), texts.clear(), errors.clear()

    n = 0
    with open_events(path) as stream:
        for block in _line_blocks(stream, max_line_bytes):
            if isinstance(block, bytes) and (lines := _split_block(block, max_line_bytes)) is not None:
                flush()  # the usual chunk: its lines are taken whole, without a Python step per line
                parts.append(_block_of_lines(lines, n + 1, b"\r" in block))
                n += len(lines)
                continue
            for line in block.split(b"\n") if isinstance(block, bytes) else block:
                n += 1
                row = line_row(line, max_line_bytes)
                if row is not None:
                    numbers.append(n)
                    texts.append(row[0])
                    errors.append(row[1])
    flush()
    if not parts:
        return pa.table({"line_number": pa.array([], pa.int64()), "raw": pa.array([], pa.string()),
                         "read_error": pa.array([], pa.string())})  # fmt: skip
    return pa.concat_tables(parts)


STAGE_JSONL_SQL = Path(__file__).resolve().parent / "sql" / "stage_jsonl.sql"
JSONL_STRUCTURE = json.dumps(dict.fromkeys(CANONICAL_COLUMNS, "JSON"))  # every field as its JSON text


def read_jsonl(path: Path, max_line_bytes: int, compiled: bool = True) -> pa.Table:
    """A JSONL file's lines as `stage_jsonl` stages them: numbered, flagged by the line reader and split
    by the compiled pass. This is the part of staging done in Python and Arrow rather than in DuckDB,
    so a run can read a file ahead on another thread while DuckDB works (pipelines/ingest/read_ahead.py).
    A file that cannot be read to its end (a truncated or corrupt ``.gz``, an I/O error) is a SchemaError
    naming it, so its run fails as an IngestError that says which file, and writes nothing."""
    try:
        lines = _read_lines(path, max_line_bytes)
    except (OSError, EOFError, zlib.error) as error:
        raise SchemaError(f"{path}: cannot be read: {error}") from error
    return split_lines(lines, compiled)


def stage_jsonl(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    max_line_bytes: int,
    compiled: bool = True,
    lines: pa.Table | None = None,
) -> None:
    """One JSON object per line (``.gz`` too). Unknown keys go into `context`; a key no row has fails the file.

    Lines of the usual shape are split into their fields by the compiled pass (`split_lines`; not with
    `compiled=False`, which the tests use to hold both paths to the same rows); the rules for the rest
    are in ``sql/stage_jsonl.sql`` (one parse of each document). `lines`: the file as `read_jsonl` read
    it already (read ahead); read here if not given. The file-level check
    (a required key that no object has) first reads the staged columns: a column with a non-null
    value in some row is present. Only when a required column has none (a rare, bad file) are the
    documents' keys read, so that a key present but always null is told from a key never there.
    """
    con.register("incoming_lines", lines if lines is not None else read_jsonl(path, max_line_bytes, compiled))
    try:
        parameters = {"structure": JSONL_STRUCTURE, "known_fields": list(CANONICAL_COLUMNS)}
        con.execute(STAGE_JSONL_SQL.read_text(), parameters)
    finally:
        con.unregister("incoming_lines")
    counts = ", ".join(f"count({quote(c)})" for c in REQUIRED_COLUMNS)
    if all(con.execute(f"select {counts} from incoming").fetchall()[0]):
        return
    has_key = ", ".join(f"bool_or(list_contains(json_keys(obj), {sql_string(c)}))" for c in REQUIRED_COLUMNS)
    n_objects, *present = con.execute(
        f"select count(obj), {has_key} from (select case when json_type(try_cast(raw as json)) = 'OBJECT' "
        "then raw end as obj from incoming)"
    ).fetchall()[0]
    if n_objects and (missing := [c for c, found in zip(REQUIRED_COLUMNS, present, strict=True) if not found]):
        raise SchemaError(f"{path}: no row has the required column(s) {', '.join(missing)}")


# --- recforge CSV and Parquet --------------------------------------------------------------


def _numbered_rows(first_line: int, rejects: str | None, n_rejected: int) -> str:
    """`incoming_rows` with each row's line number: row i read is on the i-th line not rejected
    (one row per line, as recforge writes CSV)."""
    if not n_rejected:
        return f"(select row_number() over () + {first_line - 1} as line_number, * from incoming_rows)"
    return f"""(
        select free.line as line_number, read.* exclude (i)
        from (select row_number() over () as i, * from incoming_rows) as read
        join (
            select line, row_number() over (order by line) as i
            from range({first_line}, {first_line} + (select count(*) from incoming_rows) + {n_rejected}) as t(line)
            where line not in (select line from {rejects})
        ) as free using (i)
    )"""


def _unread_rows(rejects: str | None, n_rejected: int) -> str:
    """``union all`` the rows the reader rejected, as canonical rows with their parse error (or nothing).

    DuckDB may log several errors for one row: one row (and reason) per rejected line."""
    if not n_rejected:
        return ""
    return f"""
        union all
        select
            line as line_number,
            left(any_value(csv_line), {RAW_PREFIX_CHARS}) as raw,
            case when bool_or(error_type = 'LINE SIZE OVER MAXIMUM') then 'line_too_long'
                 when bool_or(error_type = 'INVALID UNICODE') then 'invalid_utf8' else 'malformed_row' end
                as parse_error,
            {canonical_projection(lambda column: "null", "null")}
        from {rejects}
        group by line
        """


def _stage_tabular(
    con: duckdb.DuckDBPyConnection, path: Path, reader: str, first_line: int, rejects: str | None = None
) -> None:
    """Rows of a table with the canonical columns (as text); extra columns go into `context`.

    `rejects` names the table of rows the reader could not read (DuckDB's CSV rejects table:
    ``line``, ``error_type``, ``csv_line``): they become rows with a parse error, and the rows
    read keep their own line numbers (the lines that were not rejected, in order).
    """
    con.execute(f"create or replace temp table incoming_rows as select * from {reader}")
    n_rejected = con.execute(f"select count(distinct line) from {rejects}").fetchone()[0] if rejects else 0
    columns = [row[0] for row in con.execute("describe incoming_rows").fetchall()]
    if missing := [c for c in REQUIRED_COLUMNS if c not in columns]:
        raise SchemaError(f"{path}: missing required column(s) {', '.join(missing)} (has {', '.join(columns)})")
    extras = [c for c in columns if c not in CANONICAL_COLUMNS]

    def text(column: str) -> str:
        return f"cast({quote(column)} as varchar)" if column in columns else "null"

    everything = ", ".join(f"{quote(c)} := cast({quote(c)} as varchar)" for c in columns)
    extra_object = ", ".join(f"{quote(c)} := {quote(c)}" for c in extras)
    base_context = f"try_cast({text('context')} as json)" if "context" in columns else "null::json"
    context = (
        f"cast(json_merge_patch(coalesce({base_context}, '{{}}'::json), to_json(struct_pack({extra_object}))) "
        "as varchar)"
        if extras
        else f"cast({base_context} as varchar)"
    )
    numbered, unread = _numbered_rows(first_line, rejects, n_rejected), _unread_rows(rejects, n_rejected)
    con.execute(
        f"""
        create or replace temp table incoming as
        select
            line_number,
            cast(to_json(struct_pack({everything})) as varchar) as raw,
            case
                when {text("value")} is not null and try_cast({text("value")} as double) is null
                    then 'schema_mismatch'
                when {text("context")} is not null and json_type(try_cast({text("context")} as json)) is distinct
                    from 'OBJECT' then 'schema_mismatch'
            end as parse_error,
            {canonical_projection(text, context)}
        from {numbered} as numbered
        {unread}
        """
    )


def csv_header(path: Path, max_line_bytes: int) -> list[str]:
    """The column names of a comma-separated file's first line (read by us, not guessed from the rows)."""
    with open_events(path) as lines:
        first = lines.readline(max_line_bytes + 2)
    if len(first) > max_line_bytes + 1 or (len(first) == max_line_bytes + 2 and not first.endswith(b"\n")):
        raise SchemaError(f"{path}: header line longer than {max_line_bytes} bytes")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise SchemaError(f"{path}: header line is not UTF-8 ({error})") from error
    columns = next(csv.reader([text]), [])
    if not text.strip() or not columns:
        raise SchemaError(f"{path}: no header line (the first line must name the columns)")
    if duplicated := sorted({c for c in columns if columns.count(c) > 1}):
        raise SchemaError(f"{path}: header names column(s) {', '.join(duplicated)} more than once")
    return columns


def csv_reader(path: Path, columns: list[str], max_line_bytes: int, rejects: str) -> str:
    """read_csv over a file whose header we read: nothing is sniffed, so one odd row cannot change how
    the whole file is read; a row that does not fit (too many / few fields, an unterminated quote,
    invalid UTF-8, longer than `max_line_bytes`) goes to the `rejects` table instead of failing the file."""
    line_size = max_line_bytes + 1  # DuckDB counts the newline
    buffer_size = max(32 << 20, 2 * line_size)  # DuckDB wants its buffer larger than a line
    spec = "{" + ", ".join(f"{sql_string(c)}: 'VARCHAR'" for c in columns) + "}"
    return (
        f"read_csv({path_literal(path)}, header = true, auto_detect = false, columns = {spec}, delim = ',', "
        f"quote = '\"', escape = '\"', strict_mode = true, null_padding = false, hive_partitioning = false, "
        f"max_line_size = {line_size}, buffer_size = {buffer_size}, store_rejects = true, rejects_table = '{rejects}', "
        f"rejects_scan = '{rejects}_scans')"
    )


def csv_rows_reader(path: Path, max_line_bytes: int, required: tuple[str, ...]) -> tuple[list[str], str]:
    """The file's columns and a reader of its rows, after checking it has the `required` columns
    (the only thing that fails a CSV file, naming the column). Bad rows go to ``incoming_rejects``."""
    columns = csv_header(path, max_line_bytes)
    if missing := [c for c in required if c not in columns]:
        raise SchemaError(f"{path}: missing required column(s) {', '.join(missing)} (has {', '.join(columns)})")
    return columns, csv_reader(path, columns, max_line_bytes, "incoming_rejects")


def _reset_rejects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("drop table if exists incoming_rejects")
    con.execute("drop table if exists incoming_rejects_scans")


def stage_csv(con: duckdb.DuckDBPyConnection, path: Path, max_line_bytes: int) -> None:
    """A header line naming the columns, then one comma-separated row per line; bad rows are quarantined."""
    _, reader = csv_rows_reader(path, max_line_bytes, REQUIRED_COLUMNS)
    _reset_rejects(con)
    _stage_tabular(con, path, reader, 2, "incoming_rejects")


def stage_parquet(con: duckdb.DuckDBPyConnection, path: Path, max_line_bytes: int) -> None:
    _stage_tabular(con, path, f"read_parquet({path_literal(path)}, hive_partitioning = false)", first_line=1)


# --- catalog ---------------------------------------------------------------------------------


def read_recforge_catalog(path: Path) -> pd.DataFrame:
    items = pd.read_json(path, lines=True, dtype={"item_id": str})
    required = {"item_id", "category", "price", "in_stock", "is_blocked"}
    if missing := required - set(items.columns):
        raise SchemaError(f"{path}: catalog lacks required column(s) {sorted(missing)}")
    return _catalog_frame(items)


def _catalog_frame(items: pd.DataFrame) -> pd.DataFrame:
    items = items.copy()
    for column in CATALOG_COLUMNS:
        if column not in items:
            items[column] = None
    items["item_id"] = items["item_id"].astype(str)
    items["price"] = _finite_prices(items)
    items["created_at"] = pd.to_datetime(items["created_at"], utc=True, errors="coerce", format="ISO8601")
    items["attributes"] = [json.dumps(a) if isinstance(a, dict) else None for a in items["attributes"]]
    return items[CATALOG_COLUMNS]


def _finite_prices(items: pd.DataFrame) -> pd.Series:
    """Prices as numbers; a NaN or infinite price becomes NULL (unknown), with a warning naming the items.

    The catalog is replaced whole, so refusing it for one bad price would stop every run; an
    unknown price is what items without one already have (MovieLens), and the business rules
    treat it as such.
    """
    prices = pd.to_numeric(items["price"], errors="coerce").astype("float64")
    bad = items["price"].notna() & ~np.isfinite(prices)
    if bad.any():
        named = ", ".join(items.loc[bad, "item_id"].head(10))
        log.warning("catalog: %d non-finite price(s) set to NULL (items %s)", int(bad.sum()), named)
    return prices.where(np.isfinite(prices)).astype(object).where(np.isfinite(prices), None)


# --- MovieLens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MovieLensLayout:
    """Where a MovieLens release keeps its ratings and movies, and how they are spelled."""

    ratings: str
    movies: str
    ratings_reader: str  # DuckDB table function text producing user_id, item_id, rating, ts (epoch seconds)
    movies_format: str  # 'csv' | 'dat' | 'u.item'


def _movielens_layout(directory: Path) -> MovieLensLayout:
    if (directory / "ratings.csv").exists():
        return MovieLensLayout(
            "ratings.csv",
            "movies.csv",
            "read_csv('{path}', header = true, all_varchar = true, "
            "columns = {{'userId': 'VARCHAR', 'movieId': 'VARCHAR', 'rating': 'VARCHAR', 'timestamp': 'VARCHAR'}})",
            "csv",
        )
    if (directory / "ratings.dat").exists():
        return MovieLensLayout(
            "ratings.dat",
            "movies.dat",
            "(select column0 as userId, column2 as movieId, column4 as rating, column6 as timestamp "
            "from read_csv('{path}', header = false, sep = ':', all_varchar = true, quote = '', "
            "columns = {{'column0': 'VARCHAR', 'column1': 'VARCHAR', 'column2': 'VARCHAR', 'column3': 'VARCHAR', "
            "'column4': 'VARCHAR', 'column5': 'VARCHAR', 'column6': 'VARCHAR'}}))",
            "dat",
        )
    if (directory / "u.data").exists():
        return MovieLensLayout(
            "u.data",
            "u.item",
            "read_csv('{path}', header = false, sep = '\\t', all_varchar = true, "
            "columns = {{'userId': 'VARCHAR', 'movieId': 'VARCHAR', 'rating': 'VARCHAR', 'timestamp': 'VARCHAR'}})",
            "u.item",
        )
    raise SchemaError(f"{directory}: not a MovieLens release (no ratings.csv, ratings.dat or u.data)")


def stage_movielens(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Ratings become `rating` events with the rating as `value`; the event id is derived, hence stable."""
    directory = path if path.is_dir() else path.parent
    layout = _movielens_layout(directory)
    ratings = directory / layout.ratings
    reader = layout.ratings_reader.format(path=str(ratings).replace("'", "''"))  # the template quotes it
    first_line = 2 if layout.ratings.endswith(".csv") else 1
    con.execute(
        f"""
        create or replace temp table incoming as
        with rows as (select * from {reader})
        select
            row_number() over () + {first_line - 1} as line_number,
            cast(to_json(struct_pack(userId := userId, movieId := movieId, rating := rating, timestamp := timestamp))
                 as varchar) as raw,
            case
                when try_cast(rating as double) is null or try_cast(timestamp as bigint) is null
                    then 'schema_mismatch'
            end as parse_error,
            'ml:' || userId || ':' || movieId || ':' || timestamp as event_id,
            userId as user_id,
            movieId as item_id,
            'rating' as event_type,
            to_timestamp(try_cast(timestamp as bigint)) as event_ts,
            try_cast(rating as double) as value,
            null::varchar as session_id,
            null::varchar as context
        from rows
        """
    )


def read_movielens_catalog(path: Path) -> pd.DataFrame:
    """Movies as items: the first genre is the category; all genres and the year go to attributes."""
    directory = path if path.is_dir() else path.parent
    layout = _movielens_layout(directory)
    movies_path = directory / layout.movies
    if not movies_path.exists():
        raise SchemaError(f"{directory}: MovieLens ratings without their movies file {layout.movies}")
    if layout.movies_format == "csv":
        movies = pd.read_csv(movies_path, dtype=str)
        ids, titles, genres = movies["movieId"], movies["title"], movies["genres"].fillna("").str.split("|")
    elif layout.movies_format == "dat":
        movies = pd.read_csv(
            movies_path, sep="::", engine="python", header=None, names=["id", "title", "genres"], encoding="latin-1"
        )
        ids, titles, genres = movies["id"].astype(str), movies["title"], movies["genres"].fillna("").str.split("|")
    else:
        genre_names = [
            "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
            "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
        ]  # fmt: skip
        movies = pd.read_csv(movies_path, sep="|", header=None, encoding="latin-1", dtype=str)
        flags = movies.iloc[:, 5 : 5 + len(genre_names)].astype(int).to_numpy()
        ids, titles = movies[0], movies[1]
        genres = pd.Series([[g for g, f in zip(genre_names, row, strict=True) if f] for row in flags])
    genres = [[g for g in gs if g and g != "(no genres listed)"] for gs in genres]
    return _catalog_frame(
        pd.DataFrame(
            {
                "item_id": ids.astype(str).to_numpy(),
                "title": titles.to_numpy(),
                "category": [gs[0] if gs else "unknown" for gs in genres],
                "price": None,
                "in_stock": True,
                "is_blocked": False,
                "attributes": [{"genres": gs} for gs in genres],
            }
        )
    )


# --- Retailrocket ----------------------------------------------------------------------------

RETAILROCKET_EVENTS = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}


def stage_retailrocket(con: duckdb.DuckDBPyConnection, path: Path, max_line_bytes: int) -> None:
    """`timestamp,visitorid,event,itemid,transactionid` (epoch milliseconds); the transaction id goes to context."""
    columns, reader = csv_rows_reader(path, max_line_bytes, ("timestamp", "visitorid", "event", "itemid"))
    _reset_rejects(con)
    con.execute(f"create or replace temp table incoming_rows as select * from {reader}")
    n_rejected = con.execute("select count(distinct line) from incoming_rejects").fetchone()[0]
    fields = ", ".join(f"{quote(c)} := {quote(c)}" for c in columns)
    transaction = "transactionid" if "transactionid" in columns else "null::varchar"
    mapping = " ".join(f"when '{k}' then '{v}'" for k, v in RETAILROCKET_EVENTS.items())
    con.execute(
        f"""
        create or replace temp table incoming as
        select
            line_number,
            cast(to_json(struct_pack({fields})) as varchar) as raw,
            case when timestamp is not null and try_cast(timestamp as bigint) is null then 'schema_mismatch' end
                as parse_error,
            'rr:' || visitorid || ':' || itemid || ':' || event || ':' || timestamp as event_id,
            visitorid as user_id,
            itemid as item_id,
            case event {mapping} else event end as event_type,
            make_timestamptz(try_cast(timestamp as bigint) * 1000) as event_ts,
            null::double as value,
            null::varchar as session_id,
            case when {transaction} is not null then cast(json_object('transaction_id', {transaction}) as varchar)
                end as context
        from {_numbered_rows(2, "incoming_rejects", n_rejected)} as numbered
        {_unread_rows("incoming_rejects", n_rejected)}
        """
    )


# recforge's own files by how their name ends. `.json` is read as JSON Lines (one object per line).
RECFORGE_FORMATS = {
    ".jsonl": stage_jsonl,
    ".jsonl.gz": stage_jsonl,
    ".json": stage_jsonl,
    ".json.gz": stage_jsonl,
    ".csv": stage_csv,
    ".parquet": stage_parquet,
}


def recforge_format(path: Path):
    """The stage function for a recforge file by its name's ending, or None if it is no recforge format."""
    name = path.name.lower()
    return next((stage for ending, stage in RECFORGE_FORMATS.items() if name.endswith(ending)), None)


@dataclass(frozen=True)
class Source:
    """A named way to read events (and maybe the catalog that comes with them)."""

    name: str
    description: str

    def reads_lines(self, path: Path) -> bool:
        """Whether `stage` reads `path` line by line in Python (JSONL), which `read_jsonl` can do ahead of it."""
        return self.name == STREAM_SOURCE or (self.name == "recforge" and recforge_format(path) is stage_jsonl)

    def stage(
        self, con: duckdb.DuckDBPyConnection, path: Path, max_line_bytes: int, lines: pa.Table | None = None
    ) -> None:
        """Stage `path` as the temp table `incoming`; `lines`: its lines read ahead by `read_jsonl` (JSONL only)."""
        if lines is not None:
            if not self.reads_lines(path):
                raise ValueError(f"{path}: lines read ahead, but {self.name} does not read this file as JSONL")
            stage_jsonl(con, path, max_line_bytes, lines=lines)
        elif self.name == "recforge":
            stage = recforge_format(path)
            if stage is None:
                raise SchemaError(f"{path}: unsupported format (one of {', '.join(RECFORGE_FORMATS)})")
            stage(con, path, max_line_bytes)
        elif self.name == STREAM_SOURCE:  # the collector's segments: recforge JSONL
            stage_jsonl(con, path, max_line_bytes)
        elif self.name == "movielens":
            stage_movielens(con, path)
        elif self.name == "retailrocket":
            stage_retailrocket(con, path, max_line_bytes)
        else:
            raise KeyError(self.name)

    def event_files(self, path: Path) -> list[Path]:
        """The files one `ingest --path` reads: the path itself, or what this source expects in a directory."""
        if self.name == "movielens":
            directory = path if path.is_dir() else path.parent
            return [directory / _movielens_layout(directory).ratings]
        if path.is_file():
            return [path]
        patterns = ("*.csv",) if self.name == "retailrocket" else tuple(f"*{s}" for s in RECFORGE_FORMATS)
        files = sorted(p for pattern in patterns for p in path.glob(pattern))
        if not files:
            raise SchemaError(f"{path}: no {self.name} event files ({', '.join(patterns)})")
        return files

    def catalog(self, path: Path) -> pd.DataFrame | None:
        if self.name == "movielens":
            return read_movielens_catalog(path)
        return None


SOURCES = {
    "recforge": Source("recforge", "recforge's canonical events as JSONL, CSV or Parquet"),
    "movielens": Source("movielens", "MovieLens ratings.csv / ratings.dat / u.data with its movies file"),
    "retailrocket": Source("retailrocket", "Retailrocket events.csv: timestamp,visitorid,event,itemid,transactionid"),
}


# The collector's closed segments (landing/stream/): JSONL read by the same adapter, under their own
# source name so that a landing day's daily files and its micro-batches never replace each other.
# Not in SOURCES: segments are ingested by pipelines.ingest.stream, not imported with --source.
STREAM_SOURCE = "stream"
STREAM = Source(STREAM_SOURCE, "the collector's segment files (POST /v1/events), recforge JSONL")


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]
