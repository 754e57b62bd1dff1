"""The JSONL staging on both paths: lines split by the compiled pass (pipelines/ingest/_jsonl.c) and by the SQL.

The SQL (sql/stage_jsonl.sql) defines what a line becomes; the compiled pass only takes lines it can
split exactly as the SQL would, and must leave every other line to it.
"""

import json

import duckdb
import numpy as np
import pytest

from pipelines.ingest import jsonl_fields
from pipelines.ingest.sources import _read_lines, stage_jsonl

USUAL = {
    "event_id": "ev1",
    "user_id": "u1",
    "item_id": "i1",
    "event_type": "view",
    "event_ts": "2026-01-05T00:00:38.255Z",
    "value": None,
    "session_id": "s1",
    "context": {"device": "desktop", "locale": "pl-PL"},
}

# Lines the compiled pass takes: the usual shape, however it is spaced or ordered.
TAKEN = [
    json.dumps(USUAL),
    json.dumps(USUAL, separators=(",", ":")),
    json.dumps({**USUAL, "value": 12.50}).replace("12.5", "12.50"),  # a number as written, the cast reads it
    json.dumps({**USUAL, "value": 7}),
    json.dumps({**USUAL, "value": -3.25}),
    json.dumps({**USUAL, "value": 0}),
    json.dumps(dict(reversed(list(USUAL.items())))),
    '  {  "event_id" : "ev2" ,\t"user_id":"u2", "item_id":"i2","event_type":"purchase" , '
    '"event_ts":"2026-01-05T10:00:00Z","value":19.99 }  ',
    json.dumps(
        {**USUAL, "context": {"a": [1, 2, {"x": "é/ü"}], "b": True, "c": None, "d": {}, "e": [], "n": -12}},
        ensure_ascii=False,
    ),
    json.dumps({**USUAL, "context": None, "session_id": None}),
    json.dumps({"event_id": "ev3"}),  # fields missing: the rules quarantine it, the staging only reads it
    "{}",
    json.dumps({**USUAL, "event_type": "not-a-type", "event_ts": "yesterday"}),  # read as text; the rules judge
    json.dumps({**USUAL, "user_id": "ü" * 3, "item_id": ""}, ensure_ascii=False),
]

# Lines it must leave to the SQL: what json_transform rewrites, what DuckDB's reader alone decides.
LEFT = [
    json.dumps({**USUAL, "user_id": 'a"b'}),  # an escape
    json.dumps({**USUAL, "context": {"x": "é"}}),  # an escaped character (\u00e9)
    json.dumps({**USUAL, "referrer": "mail"}),  # a key outside the contract goes into context (SQL)
    json.dumps(USUAL)[:-1] + ', "user_id": "u9"}',  # a key twice
    json.dumps({**USUAL, "value": -0.0}),  # written back as 0
    json.dumps({**USUAL, "value": 7}).replace(": 7", ": 1e3"),  # an exponent
    json.dumps({**USUAL, "context": {"f": 1.5}}),  # a float in context is reformatted
    json.dumps({**USUAL, "context": {"f": 1e400}}).replace("Infinity", "1e400"),
    json.dumps(USUAL)[:-1] + ",}",  # a trailing comma
    json.dumps({**USUAL, "value": float("nan")}),  # NaN
    json.dumps({**USUAL, "event_id": 42}),  # a number as an id
    json.dumps({**USUAL, "value": "12"}),  # a string as a value
    json.dumps({**USUAL, "context": "desktop"}),
    json.dumps({**USUAL, "user_id": ["u1"]}),
    json.dumps(USUAL) + " trailing",
    json.dumps(USUAL)[:-1],  # cut short
    '["not", "an", "object"]',
    "null",
    "not json at all",
    json.dumps({**USUAL, "user_id": "tab\there"}).replace("\\t", "\t"),  # a raw control character
    json.dumps({**USUAL, "value": 12345678901234567890123456789}),  # too many digits to be sure of
    json.dumps({"Event_ID": "ev1"}),  # keys are case-sensitive: not a contract key
    json.dumps(USUAL)[:-1] + ', "q\\"uote": 1, "x/y~z": 2, "x": 3, "x": 4}',  # unknown keys of any spelling
]


def _incoming(con, path, compiled):
    """Every staged row, as text (a NaN value equals itself only that way)."""
    stage_jsonl(con, path, 1 << 20, compiled=compiled)
    return [repr(row) for row in con.execute("select * from incoming order by line_number").fetchall()]


def _split_flags(path):
    return jsonl_fields.split_lines(_read_lines(path, 1 << 20)).column("split").to_pylist()


@pytest.fixture
def con():
    connection = duckdb.connect()
    connection.execute("set TimeZone = 'UTC'")
    yield connection
    connection.close()


def test_the_compiled_pass_is_built():
    """`make setup` compiles pipelines/ingest/_jsonl.c; without it the comparisons below would test the SQL twice."""
    assert jsonl_fields._split_events is not None, "pipelines/ingest/_jsonl.c was not compiled: reinstall (make setup)"


def test_both_paths_stage_every_hostile_line_alike(con, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(TAKEN + LEFT + ["", "   ", "\u00a0"]) + "\n", encoding="utf-8")
    assert _incoming(con, path, compiled=True) == _incoming(con, path, compiled=False)
    flags = _split_flags(path)
    assert flags[: len(TAKEN)] == [True] * len(TAKEN)  # each usual line really took the compiled path
    assert flags[len(TAKEN) : len(TAKEN) + len(LEFT)] == [False] * len(LEFT)


def test_both_paths_stage_the_simulated_landing_files_alike(con, simulated):
    files = sorted((simulated.landing_dir / "events").glob("*/*.jsonl"))
    assert files
    for path in files[:4]:
        assert _incoming(con, path, compiled=True) == _incoming(con, path, compiled=False)
        flags = _split_flags(path)
        assert sum(flags) > 0.9 * len(flags)  # the corrupted lines the simulator writes are left to the SQL


def test_a_flagged_line_is_never_split(con, tmp_path):
    """A line cut for its length (line_too_long) keeps its reader's reason even when its prefix would split."""
    path = tmp_path / "events.jsonl"
    line = json.dumps(USUAL)
    path.write_text(line + "\n" + json.dumps({**USUAL, "session_id": "x" * 400}) + "\n", encoding="utf-8")
    stage_jsonl(con, path, len(line) + 10)
    rows = con.execute("select line_number, parse_error from incoming order by line_number").fetchall()
    assert rows == [(1, None), (2, "line_too_long")]


def test_the_compiled_pass_refuses_buffers_that_do_not_match():
    split = jsonl_fields._split_events
    if split is None:
        pytest.skip("pipelines/ingest/_jsonl.c not compiled")  # test_the_compiled_pass_is_built fails then
    offsets = np.array([0, 3, 6], dtype=np.int32).tobytes()
    with pytest.raises(ValueError, match="shorter than"):
        split(b"{}\n{}\n", offsets, 1, 2)
    with pytest.raises(ValueError, match="outside the data"):
        split(b"{}", offsets, 0, 2)
    with pytest.raises(ValueError, match="not in order"):
        split(b"{}\n{}\n", np.array([0, 5, 3], dtype=np.int32).tobytes(), 0, 2)


def _mutations(rng, line: str) -> str:
    """`line` with one to three random edits: a character dropped, doubled, swapped for JSON punctuation or
    whitespace, or a small JSON text spliced in: what a broken producer or a hand-edited file gives."""
    pieces = ['"', ",", ":", "{", "}", "[", "]", " ", "\t", "-", "0", "1e5", ".5", "null", "true", "NaN", "é", "\\"]
    pieces += ['"x": 1', '"value": -0', '"context": {"a": 1.0}', '"event_id": 7', "\u2028", "\x01"]
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(0, len(line) + 1))
        kind = int(rng.integers(0, 4))
        if kind == 0 and at < len(line):
            line = line[:at] + line[at + 1 :]
        elif kind == 1 and at < len(line):
            line = line[:at] + line[at] + line[at:]
        else:
            line = line[:at] + str(rng.choice(pieces)) + line[at + (kind == 2) :]
    return line


def test_both_paths_stage_randomly_broken_lines_alike(con, tmp_path):
    """Two thousand lines broken at random (seeded): whatever the compiled pass takes, the SQL stages the same."""
    rng = np.random.default_rng(20261205)
    bases = [
        json.dumps(USUAL),
        json.dumps(USUAL, separators=(",", ":")),
        json.dumps({**USUAL, "value": 12.5, "context": {"a": [1, {"b": None}], "c": True}}),
    ]
    lines = [_mutations(rng, bases[n % len(bases)]).replace("\n", " ").replace("\r", " ") for n in range(2000)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _incoming(con, path, compiled=True) == _incoming(con, path, compiled=False)
    split = sum(_split_flags(path))
    assert 0 < split < len(lines)  # both paths were exercised


def test_the_split_fields_hold_no_more_memory_than_their_text(tmp_path):
    """Each field's buffer is cut to what it holds: a day's chunks all stay alive until the file is staged, and
    buffers sized for the whole chunk held gigabytes at a million users."""
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(USUAL)] * 5000) + "\n", encoding="utf-8")
    table = jsonl_fields.split_lines(_read_lines(path, 1 << 20))
    assert all(table.column("split").to_pylist())
    for name in ("event_id", "context"):
        for chunk in table.column(name).chunks:
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
            assert chunk.buffers()[2].size <= int(offsets[len(chunk)]) + 1
