"""The usual JSONL event line split into its fields before DuckDB sees it (``_jsonl.c``, when built).

Staging parses each line in SQL (``sql/stage_jsonl.sql``: json_valid, json_transform, json_keys, then
string work on every field): about a third of an ingest. The compiled pass copies the fields of every
line of the usual shape straight into Arrow columns; the SQL then stages only the rest (escapes,
unknown keys, malformed or mistyped lines) and takes the split lines as they are. Both paths give a
line the same row: the C pass refuses whatever it is not sure of (see its header), and
tests/ingest/test_jsonl_fastpath.py compares them line by line. Without a C compiler at install, every
line goes through the SQL, only slower.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serving.events import EVENT_FIELDS

try:
    from pipelines.ingest._jsonl import FIELDS as _COMPILED_FIELDS
    from pipelines.ingest._jsonl import split_events as _split_events
except ImportError:  # no C compiler at install: the SQL stages every line
    _split_events = None
else:
    if _COMPILED_FIELDS != EVENT_FIELDS:
        raise ImportError(f"pipelines/ingest/_jsonl.c splits {_COMPILED_FIELDS}, the contract is {EVENT_FIELDS}")


def split_lines(lines: pa.Table, compiled: bool = True) -> pa.Table:
    """`lines` (the line reader's line_number, raw, read_error) with `split` (was the line split here?)
    and each field's text beside it: the value as written, `context` minified; NULL for a field the
    line does not have and on every line not split.

    A line the reader flagged (read_error) is never split. `compiled=False`, or no compiled pass,
    leaves every line to the SQL. Nothing is filtered or copied: the SQL reads `split` to choose.
    """
    if not compiled or _split_events is None or lines.num_rows == 0:
        return _without_split(lines)
    schema = _schema(lines.schema)
    batches = []
    for batch in lines.to_batches():
        raw = batch.column("raw")
        _, offsets, data = raw.buffers()
        taken, *fields = _split_events(data or b"", offsets, raw.offset, len(raw))
        split = np.frombuffer(taken, dtype=np.uint8).astype(bool)
        split &= batch.column("read_error").is_null().to_numpy(zero_copy_only=False)
        columns = [*batch.columns, pa.array(split)]
        for field_offsets, field_data, valid in fields:
            validity = np.packbits(np.frombuffer(valid, dtype=np.uint8)[: len(raw)], bitorder="little")
            buffers = [pa.py_buffer(validity), pa.py_buffer(field_offsets), pa.py_buffer(field_data)]
            columns.append(pa.Array.from_buffers(pa.string(), len(raw), buffers))
        batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
    return pa.Table.from_batches(batches, schema)


def _schema(lines: pa.Schema) -> pa.Schema:
    return pa.schema([*lines, pa.field("split", pa.bool_())] + [pa.field(name, pa.string()) for name in EVENT_FIELDS])


def _without_split(lines: pa.Table) -> pa.Table:
    """Every line left to the SQL: `split` false, no field."""
    n = lines.num_rows
    columns = [*lines.columns, pa.array(np.zeros(n, dtype=bool))] + [pa.nulls(n, pa.string()) for _ in EVENT_FIELDS]
    return pa.Table.from_arrays(columns, schema=_schema(lines.schema))
