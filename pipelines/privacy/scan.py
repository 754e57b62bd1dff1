"""Find an id anywhere under a directory, in the bytes and in what compressed files decode to.

Forgetting is only as good as its proof: after ``recforge forget`` the id must be nowhere under
RECFORGE_HOME. A plain ``grep -r`` misses ids inside compressed files (Parquet pages, gzip,
the zip members of a saved model's ``.npz``) and DuckDB's compressed string segments, so every
file is searched raw and, where it is one of those formats, decoded:

- ``.gz`` files are decompressed, zip files (``.npz``, ``.whl``...) member by member;
- Parquet files are read with pyarrow and every value compared as text;
- a DuckDB database is opened read-only and every text column of every table searched.

An id matches only as a whole token: the characters next to it must not be id characters
(``serving/ids.py``), so ``u0001`` does not match inside ``u00012`` or ``xu0001``.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from serving.ids import ID_CHARACTERS

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
DUCKDB_MAGIC_OFFSET, DUCKDB_MAGIC = 8, b"DUCK"


@dataclass(frozen=True)
class Hit:
    """One place an id was found: the file, and how (``bytes``, ``gzip``, ``zip:<member>``, ``parquet``, ...)."""

    path: Path
    how: str

    def __str__(self) -> str:
        return f"{self.path} ({self.how})"


# Text as stored: UTF-8 (JSON, CSV, SQL, HTML), and the fixed-width UTF-32 of numpy string arrays
# (``user_ids`` in a saved model's .npz) and UTF-16 some tools write.
ENCODINGS = ("utf-8", "utf-32-le", "utf-16-le")
_ID_CHARACTER = re.compile(f"[{ID_CHARACTERS}]")


@dataclass(frozen=True)
class Needle:
    """One id in one encoding, with the encoded id characters that may not touch it."""

    encoded: bytes
    width: int  # bytes per character in this encoding
    neighbours: frozenset[bytes]

    def found_in(self, data: bytes) -> bool:
        """Whether `data` holds the id as a whole token (a fast find, then a look at both neighbours)."""
        start = data.find(self.encoded)
        while start >= 0:
            end = start + len(self.encoded)
            before = data[start - self.width : start] if start >= self.width else b""
            after = data[end : end + self.width]
            if before not in self.neighbours and after not in self.neighbours:
                return True
            start = data.find(self.encoded, start + 1)
        return False


def needles(value: str) -> list[Needle]:
    """`value` in every encoding of ENCODINGS."""
    found = []
    for encoding in ENCODINGS:
        characters = frozenset(chr(code).encode(encoding) for code in range(128) if _ID_CHARACTER.fullmatch(chr(code)))
        found.append(Needle(value.encode(encoding), len("a".encode(encoding)), characters))
    return found


def find_ids(root: Path, ids: list[str]) -> list[Hit]:
    """Every file under `root` holding any of `ids`, searched raw and decoded (see the module docstring)."""
    patterns = [needle for value in ids for needle in needles(value)]
    hits: list[Hit] = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()):
        hits += [Hit(path, how) for how in _file_hits(path, patterns)]
    return hits


def _found(data: bytes, patterns: list[Needle]) -> bool:
    return any(needle.found_in(data) for needle in patterns)


CHUNK_BYTES = 16 << 20  # files are searched in pieces: a warehouse of many GiB is never read whole


def file_holds(path: Path, patterns: list[Needle]) -> bool:
    """Whether the file's raw bytes hold any of the needles, read in CHUNK_BYTES pieces that overlap by the
    longest needle and its neighbours, so an id across a piece boundary is still found whole."""
    overlap = max((len(n.encoded) + 2 * n.width for n in patterns), default=0)
    tail = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            window = tail + chunk
            if _found(window, patterns):
                return True
            tail = window[-overlap:]
    return False


def _file_hits(path: Path, patterns: list[Needle]) -> list[str]:
    with open(path, "rb") as handle:
        head = handle.read(DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC))
        handle.seek(max(path.stat().st_size - len(PARQUET_MAGIC), 0))
        end = handle.read()
    hits = ["bytes"] if file_holds(path, patterns) else []
    if head.startswith(GZIP_MAGIC):
        try:
            if _found(gzip.decompress(path.read_bytes()), patterns):
                hits.append("gzip")
        except (OSError, EOFError):
            hits.append("gzip: unreadable")  # cannot prove it absent
    elif head.startswith(ZIP_MAGIC):
        hits += _zip_hits(path, patterns)
    elif head.startswith(PARQUET_MAGIC) and end == PARQUET_MAGIC:
        hits += _parquet_hits(path, patterns)
    elif head[DUCKDB_MAGIC_OFFSET:] == DUCKDB_MAGIC:
        hits += _duckdb_hits(path, patterns)
    return hits


def _zip_hits(path: Path, patterns) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return [
                f"zip:{name}"
                for name in archive.namelist()
                if _found(member := archive.read(name), patterns)
                or (name.endswith(".npy") and _found(_npy_text(member), patterns))
            ]
    except (zipfile.BadZipFile, OSError):
        return ["zip: unreadable"]


def _npy_text(member: bytes) -> bytes:
    """A numpy string array's values one per line: in the file they are fixed-width and touch each
    other (``u000001`` follows ``u000000`` with no separator), so no token boundary shows raw."""
    import io

    import numpy as np

    try:
        array = np.load(io.BytesIO(member), allow_pickle=False)
    except ValueError:
        return b""
    if array.dtype.kind not in "US":
        return b""
    return "\n".join(str(value) for value in array.ravel().tolist()).encode()


def _parquet_hits(path: Path, patterns) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # noqa: BLE001 (any reader error: the file cannot be proven clean)
        return ["parquet: unreadable"]
    hits = []
    for name in table.column_names:
        text = "\n".join(str(value) for value in table.column(name).to_pylist()).encode()
        if _found(text, patterns):
            hits.append(f"parquet:{name}")
    return hits


def _duckdb_hits(path: Path, patterns) -> list[str]:
    import duckdb

    from pipelines.warehouse.connection import attached_file

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        try:  # this process already holds it open (recforge's connections, an in-process dbt run): share it
            con = attached_file(path)
        except duckdb.Error:
            return ["duckdb: cannot open (in use?)"]
    hits = []
    try:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON') order by 1, 2, 3"
        ).fetchall()
        for schema, table, column in columns:
            values = con.execute(f'select distinct cast("{column}" as varchar) from "{schema}"."{table}"').fetchall()
            text = "\n".join(str(value) for (value,) in values).encode()
            if _found(text, patterns):
                hits.append(f"duckdb:{schema}.{table}.{column}")
    finally:
        con.close()
    return hits
