"""Hostile and careless input: ids outside the id contract, non-finite values, huge lines, bad CSV rows,
files that share a name, and landing days holding copies or files of other formats."""

import gzip
import json
import logging
import math
import shutil
import tracemalloc
from datetime import timedelta

import duckdb
import pytest
from pydantic import ValidationError

from pipelines.ingest import ingest_interval, ingest_path
from pipelines.ingest.run import landing_day_dir
from pipelines.monitoring.status import status_lines
from pipelines.settings import Settings
from pipelines.simulate import catalog_file
from pipelines.warehouse.connection import connect
from serving.ids import ID_CHARACTERS_REGEX, MAX_ID_LENGTH, id_violation
from tests.ingest.test_ingest import DAY, event, quarantined, write_day

HOSTILE_IDS = {
    "nul\x00byte": "id_bad_characters",
    "new\nline": "id_bad_characters",
    " leading-space": "id_bad_characters",
    "trailing-space ": "id_bad_characters",
    "zero\u200bwidth": "id_bad_characters",
    "bell\x07": "id_bad_characters",
    "tab\tinside": "id_bad_characters",
    "slash/../etc": "id_bad_characters",
    "x" * 100_000: "id_too_long",
    "y" * (MAX_ID_LENGTH + 1): "id_too_long",
}


def one_day(settings):
    return ingest_interval(settings, DAY, DAY + timedelta(days=1))


def test_user_and_item_ids_outside_the_id_contract_are_quarantined_with_their_violation(handmade):
    hostile = list(HOSTILE_IDS.items())
    lines = [json.dumps(event(1, user_id="u:1.a_b-" + "z" * (MAX_ID_LENGTH - 8)))]  # exactly the limit: fine
    lines += [json.dumps(event(2 + 2 * n, user_id=bad)) for n, (bad, _) in enumerate(hostile)]
    lines += [json.dumps(event(3 + 2 * n, item_id=bad)) for n, (bad, _) in enumerate(hostile)]
    write_day(handmade, DAY, lines)
    result = one_day(handmade)
    assert (result.rows_input, result.rows_accepted) == (1 + 2 * len(hostile), 1)
    expected = [(2 + n, reason) for n, (_, reason) in enumerate(hostile)]
    expected += [(2 + len(hostile) + n, reason) for n, (_, reason) in enumerate(hostile)]
    assert quarantined(handmade) == sorted(expected)


def test_the_sql_rule_and_the_python_rule_agree_on_every_id():
    """Ingest checks ids in SQL, the publisher and the API in Python: one contract, the same verdicts."""
    ids = [*HOSTILE_IDS, "u1", "a:b.c_d-e", "z" * MAX_ID_LENGTH, "Ünïcode", "semi;colon", "quote'd"]
    con = duckdb.connect()
    in_sql = con.execute(
        "select case when length(i) > ? then 'id_too_long' when not regexp_full_match(i, ?) "
        "then 'id_bad_characters' end from unnest(?::varchar[]) as t(i)",
        [MAX_ID_LENGTH, ID_CHARACTERS_REGEX, ids],
    ).fetchall()
    assert [reason for (reason,) in in_sql] == [id_violation(i) for i in ids]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "inf", "-Infinity"])
def test_a_non_finite_value_is_quarantined(handmade, value):
    text = json.dumps(event(2, event_type="rating", value=value))  # json.dumps writes NaN / Infinity tokens
    write_day(handmade, DAY, [json.dumps(event(1, event_type="rating", value=4.5)), text])
    result = one_day(handmade)
    assert result.rows_accepted == 1
    assert quarantined(handmade) == [(2, "non_finite_value")]


def test_a_line_longer_than_the_limit_is_quarantined_without_being_held_whole(handmade):
    huge = json.dumps(event(2, context={"padding": "p" * (20 << 20)}))  # a 20 MB line
    write_day(handmade, DAY, [json.dumps(event(1)), huge, json.dumps(event(3))])
    tracemalloc.start()
    try:
        result = one_day(handmade)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"reading held {peak} bytes for a 20 MB line"
    assert (result.rows_accepted, result.rows_quarantined) == (2, 1)
    with connect(handmade) as con:
        line, reason, raw = con.execute("select line_number, reason, raw from quarantine.events").fetchone()
    assert (line, reason, len(raw)) == (2, "line_too_long", 1000)
    assert raw.startswith('{"event_id": "t2"')


def test_the_line_limit_is_a_setting_with_a_range(handmade):
    small = handmade.model_copy(update={"ingest_max_line_bytes": 1024})
    write_day(small, DAY, [json.dumps(event(1)), json.dumps(event(2, session_id="s" * 1024))])
    assert quarantined(small) == [] and one_day(small).rows_quarantined == 1
    assert quarantined(small) == [(2, "line_too_long")]
    for wrong in (0, 1023, (1 << 30) + 1):
        with pytest.raises(ValidationError, match="ingest_max_line_bytes"):
            Settings(ingest_max_line_bytes=wrong)


CSV_HEADER = "event_id,user_id,item_id,event_type,event_ts,value"


def test_bad_csv_rows_are_quarantined_and_the_rest_of_the_file_is_kept(handmade):
    rows = [
        CSV_HEADER,
        "c1,u1,i000001,view,2026-03-01T10:00:00Z,",
        "c2,u1,i000001,view,2026-03-01T10:01:00Z,,surplus",  # one field too many
        "c3,u1,i000001,view",  # too few
        "c4,u1,i000001,view,2026-03-01T10:03:00Z,",
        "c5,u1,i000001,click,2026-03-01T10:04:00Z," + "v" * 2000,  # longer than the limit
        "c6,u1,i000001,view,2026-03-01T10:05:00Z,",
        'c7,"u1,i000001,view,2026-03-01T10:06:00Z,',  # an unterminated quote runs to the end of the file
    ]
    directory = landing_day_dir(handmade, DAY.date())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "shop.csv").write_text("\n".join(rows) + "\n")
    result = one_day(handmade.model_copy(update={"ingest_max_line_bytes": 1024}))
    (batch,) = result.batches
    assert (batch.rows_input, batch.rows_accepted, batch.rows_quarantined) == (7, 3, 4)
    assert quarantined(handmade) == [(3, "malformed_row"), (4, "malformed_row"), (6, "line_too_long"),
                                     (8, "malformed_row")]  # fmt: skip
    with connect(handmade) as con:
        assert con.execute("select event_id from raw.events order by event_id").fetchall() == [
            ("c1",),
            ("c4",),
            ("c6",),
        ]
        assert con.execute("select raw from quarantine.events where line_number = 3").fetchone() == (rows[2],)


def test_a_csv_row_with_a_bad_value_does_not_change_how_the_file_is_read(handmade):
    """DuckDB's sniffer, given such a row, once read the header as data ("missing required column(s)")."""
    directory = landing_day_dir(handmade, DAY.date())
    directory.mkdir(parents=True, exist_ok=True)
    good = [f"c{n},u1,i000001,view,2026-03-01T10:0{n}:00Z,1" for n in range(1, 4)]
    (directory / "shop.csv").write_text("\n".join([CSV_HEADER, *good, "c9,u1,i000001,view,2026-03-01T10:09:00Z,x;y"]))
    result = one_day(handmade)
    assert (result.rows_accepted, result.rows_quarantined) == (3, 1)
    assert quarantined(handmade) == [(5, "schema_mismatch")]


def test_two_files_with_one_name_from_two_directories_are_both_kept(settings, tmp_path):
    for folder, ids in (("a", (1, 2)), ("b", (3, 4, 5))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "events.jsonl").write_text("\n".join(json.dumps(event(n)) for n in ids) + "\n")
    ingest_path(settings, "recforge", tmp_path / "a" / "events.jsonl")
    ingest_path(settings, "recforge", tmp_path / "b" / "events.jsonl")
    (tmp_path / "a" / "events.jsonl").write_text(json.dumps(event(1)) + "\n")
    ingest_path(settings, "recforge", tmp_path / "a" / "events.jsonl")  # the same file again: replaces only it
    with connect(settings) as con:
        assert con.execute("select event_id from raw.events order by event_id").fetchall() == [
            ("t1",), ("t3",), ("t4",), ("t5",)
        ]  # fmt: skip
        assert con.execute("select batch_id from raw.batches order by batch_id").fetchall() == [
            (f"recforge:import:{tmp_path / 'a' / 'events.jsonl'}",),
            (f"recforge:import:{tmp_path / 'b' / 'events.jsonl'}",),
        ]


def test_reimporting_a_file_replaces_its_batch_from_before_import_ids_were_paths(settings, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(event(1)) + "\n")
    ingest_path(settings, "recforge", path)
    with connect(settings) as con:
        for table in ("raw.events", "raw.batches"):
            con.execute(f"update {table} set batch_id = 'recforge:import:events.jsonl'")
    ingest_path(settings, "recforge", path)
    with connect(settings) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 1
        assert con.execute("select count(*) from quarantine.events").fetchone()[0] == 0


def test_a_copy_of_a_landing_file_is_skipped_and_reported(handmade, caplog):
    write_day(handmade, DAY, [json.dumps(event(n)) for n in range(1, 4)])
    directory = landing_day_dir(handmade, DAY.date())
    shutil.copy(directory / "events.jsonl", directory / "events-copy.jsonl")
    with caplog.at_level(logging.WARNING):
        result = one_day(handmade)
    assert [b.file for b in result.batches] == ["events/date=2026-03-01/events-copy.jsonl"]
    assert result.rows_accepted == 3
    assert [(s.file, s.reason) for s in result.skipped] == [
        ("events/date=2026-03-01/events.jsonl", "duplicate_of:events-copy.jsonl")
    ]
    assert "skipped 1 file(s): events/date=2026-03-01/events.jsonl (duplicate_of:events-copy.jsonl)" in result.summary()
    assert "events.jsonl: duplicate_of:events-copy.jsonl" in caplog.text
    one_day(handmade)  # a re-run replaces the day's record of skipped files with its own
    assert skipped_rows(handmade) == [
        ("recforge", DAY.date(), "events/date=2026-03-01/events.jsonl", "duplicate_of:events-copy.jsonl")
    ]
    assert "files skipped (not read, see raw.skipped_files): 1: duplicate_of 1" in "\n".join(status_lines(handmade))


def skipped_rows(settings) -> list[tuple]:
    with connect(settings) as con:
        return con.execute(
            "select source, landing_date, file, reason from raw.skipped_files order by landing_date, file"
        ).fetchall()


def test_a_copy_inside_an_imported_directory_is_skipped_recorded_and_its_old_batch_dropped(settings, tmp_path):
    directory = tmp_path / "export"
    directory.mkdir()
    (directory / "a.jsonl").write_text(json.dumps(event(1)) + "\n")
    (directory / "b.jsonl").write_text(json.dumps(event(2)) + "\n")
    ingest_path(settings, "recforge", directory)
    shutil.copy(directory / "a.jsonl", directory / "b.jsonl")  # b is now a copy of a
    result = ingest_path(settings, "recforge", directory)
    assert [b.file for b in result.batches] == [str(directory / "a.jsonl")]
    assert [(s.file, s.reason) for s in result.skipped] == [(str(directory / "b.jsonl"), "duplicate_of:a.jsonl")]
    with connect(settings) as con:
        assert con.execute("select event_id from raw.events").fetchall() == [("t1",)]  # not doubled, b's old row gone
        assert con.execute("select count(*) from raw.batches").fetchone()[0] == 1
    ingest_path(settings, "recforge", directory)  # the same import again: one record of the skip, not two
    assert skipped_rows(settings) == [("recforge", None, str(directory / "b.jsonl"), "duplicate_of:a.jsonl")]


def test_gzipped_and_json_files_of_a_landing_day_are_read_and_other_files_reported(handmade):
    directory = landing_day_dir(handmade, DAY.date())
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(directory / "app.jsonl.gz", "wt") as compressed:
        compressed.write("\n".join(json.dumps(event(n)) for n in (1, 2)) + "\n")
    (directory / "web.json").write_text(json.dumps(event(3)) + "\n")
    (directory / "notes.txt").write_text("not events\n")
    result = one_day(handmade)
    assert sorted((b.file, b.rows_accepted) for b in result.batches) == [
        ("events/date=2026-03-01/app.jsonl.gz", 2), ("events/date=2026-03-01/web.json", 1)
    ]  # fmt: skip
    assert [(s.file, s.reason) for s in result.skipped] == [("events/date=2026-03-01/notes.txt", "unsupported_format")]


def test_a_day_with_only_unreadable_files_fails_naming_them(handmade):
    directory = landing_day_dir(handmade, DAY.date())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "events.xml").write_text("<events/>\n")
    with pytest.raises(Exception, match=r"no landing file for 2026-03-01: .*found only events.xml: unsupported_format"):
        one_day(handmade)


def test_a_non_finite_catalog_price_becomes_null_with_a_warning(handmade, caplog):
    path = catalog_file(handmade.landing_dir)
    items = [json.loads(line) for line in path.read_text().splitlines()][:3]
    items[0]["price"], items[1]["price"] = math.inf, -math.inf  # (NaN reads as missing: NULL already)
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    write_day(handmade, DAY, [json.dumps(event(1, item_id=items[2]["item_id"]))])
    with caplog.at_level(logging.WARNING):
        one_day(handmade)
    with connect(handmade) as con:
        prices = dict(con.execute("select item_id, price from raw.items").fetchall())
    assert prices == {items[0]["item_id"]: None, items[1]["item_id"]: None, items[2]["item_id"]: items[2]["price"]}
    assert f"2 non-finite price(s) set to NULL (items {items[0]['item_id']}, {items[1]['item_id']})" in caplog.text


@pytest.mark.parametrize("chunk", [7, 1024, 1 << 20])
def test_lines_are_read_alike_whatever_the_chunk_boundaries(tmp_path, monkeypatch, chunk):
    """Chunked reading must not split, merge, renumber or miss a cut line at any boundary."""
    from pipelines.ingest import sources

    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", chunk)
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"a\nbb\r\n\n" + b"x" * 3000 + b"\nc\n\xff\n" + b"y" * 1025 + b"\r\n" + b"z" * 5000)
    rows = [(r["line_number"], r["raw"][:2], len(r["raw"]), r["read_error"]) for r in
            sources._read_lines(path, 1024).to_pylist()]  # fmt: skip
    assert rows == [
        (1, "a", 1, None), (2, "bb", 2, None), (4, "xx", 1000, "line_too_long"), (5, "c", 1, None),
        (6, "\\x", 4, "invalid_utf8"), (7, "yy", 1000, "line_too_long"), (8, "zz", 1000, "line_too_long"),
    ]  # fmt: skip


def _lines_by_the_rules(data: bytes, max_line_bytes: int) -> list[tuple]:
    """The reader's rule for one line (`line_row`) applied to every line of the whole file at once, with
    no chunks: what `_read_lines`, whatever its chunks and its Arrow fast path, must give."""
    from pipelines.ingest.sources import line_row

    parts = data.split(b"\n")
    if parts[-1] == b"":  # a final newline ends the last line; it does not start another
        parts.pop()
    return [(number, *row) for number, line in enumerate(parts, 1) if (row := line_row(line, max_line_bytes))]


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_read_as_the_line_rules_say_at_any_chunk_size(tmp_path, monkeypatch, seed):
    """Seeded random files of short, blank, over-long, CRLF and invalid UTF-8 lines (and none at all
    at the end) read in chunks of random sizes give exactly the rows the rules give line by line."""
    import random

    from pipelines.ingest import sources

    rng = random.Random(seed)
    pieces = [b"", b" ", b"\r", b"\t", b"\xc2\xa0", b"\xff", b"\xe2\x80", b"{\"a\": 1}", b"x" * 40, "é".encode(),
              b"\x1c", b"\x00", b"\n", b"\n", b"\n", b"\r\n"]  # fmt: skip
    data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(200, 3000)))
    path = tmp_path / "e.jsonl"
    path.write_bytes(data)
    max_line_bytes = rng.choice([16, 64, 300])
    monkeypatch.setattr(sources, "RAW_PREFIX_CHARS", 8)  # over-long lines keep 8 characters: cut prefixes show
    for chunk in (rng.randrange(1, 50), rng.randrange(50, 2000), 1 << 20):
        monkeypatch.setattr(sources, "READ_CHUNK_BYTES", chunk)
        rows = [tuple(r.values()) for r in sources._read_lines(path, max_line_bytes).to_pylist()]
        assert rows == _lines_by_the_rules(data, max_line_bytes), (seed, chunk, max_line_bytes)


def test_a_line_is_blank_exactly_when_python_says_it_is_whitespace(tmp_path):
    """The Arrow split of a chunk skips the lines `str.isspace` calls blank (NBSP, EM SPACE, the
    separators \\x1c-\\x1f, \\v, \\f, a lone \\r) and keeps every other line, a NUL or a space-padded
    letter included, with the numbers of the file's own lines."""
    from pipelines.ingest import sources

    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b"{}\r\n\r\n  \n\t\n\x1c\n\xc2\xa0\n\xe2\x80\x83\n\x00\n\x0b\x0c\n  a \n{}\r\r\n\xc2\x85\n\xe2\x80\x8b\n"
    )
    rows = [(r["line_number"], r["raw"], r["read_error"]) for r in sources._read_lines(path, 1024).to_pylist()]
    assert rows == [(1, "{}", None), (8, "\x00", None), (10, "  a ", None), (11, "{}\r", None), (13, "\u200b", None)]


def test_every_json_type_a_field_can_take_is_judged_from_the_one_parse_of_its_line(handmade):
    """stage_jsonl.sql parses a line once and reads each field's type and text off its JSON text: a
    field of the wrong JSON type is a schema_mismatch, an escaped string is unescaped, a number id
    is kept as written, and a document that is not an object (even `null`) never reaches the rules."""
    lines = [
        json.dumps(event(1, event_id=12345, user_id=7)),  # number ids: accepted, as text
        json.dumps(event(2, event_id=True)),  # a boolean id
        json.dumps(event(3, item_id=["i1"])),  # an array id
        json.dumps(event(4, event_type=3)),  # a number where a string belongs
        json.dumps(event(5, event_ts=1767225600)),  # an epoch number is not a timestamp string
        json.dumps(event(6, context="mobile")),  # context must be an object
        json.dumps(event(7, value="3.5")),  # a value string that reads as a number: accepted
        json.dumps(event(8, value=False)),  # a boolean value
        '{"event_id": "t9", "user_id": "u\\u002d9", "item_id": "i\\"9", "event_type": "view",'
        f' "event_ts": "{event(9)["event_ts"]}"}}',  # escapes: user u-9 accepted; item i"9 breaks the id contract
        "null",
        "42",
        '"a string"',
        "  \t" + json.dumps(event(13)),  # whitespace before the object: still an object, accepted
        json.dumps(event(14))[:-1] + ', "event_ts": "x"}',  # a key given twice: the first value is read
        json.dumps(event(15, user_id=None, extra={"k": [1, 2]})),  # null id, unknown key
    ]
    write_day(handmade, DAY, lines)
    result = one_day(handmade)
    assert (result.rows_input, result.rows_accepted + result.rows_quarantined) == (15, 15)
    assert quarantined(handmade) == [
        (2, "schema_mismatch"),
        (3, "schema_mismatch"),
        (4, "schema_mismatch"),
        (5, "schema_mismatch"),
        (6, "schema_mismatch"),
        (8, "schema_mismatch"),
        (9, "id_bad_characters"),
        (10, "schema_mismatch"),
        (11, "schema_mismatch"),
        (12, "schema_mismatch"),
        (15, "missing_user_id"),
    ]
    with connect(handmade) as con:
        rows = con.execute("select event_id, user_id, value, context from raw.events order by event_ts").fetchall()
    assert rows == [
        ("12345", "7", None, '{"device":"mobile"}'),
        ("t7", "u1", 3.5, '{"device":"mobile"}'),
        ("t13", "u1", None, '{"device":"mobile"}'),
        ("t14", "u1", None, '{"device":"mobile"}'),
    ]


def test_unknown_keys_of_any_spelling_go_into_context_and_never_fail_the_file(handmade):
    """A key outside the contract may hold a quote, a dot, a slash or a tilde, or come twice: each line is
    still read (the key into `context`, the first of two values kept) and the rest of the file with it.
    Before, such a key made DuckDB's JSON path invalid, or the context map's keys not unique, and the
    whole day's file failed."""
    lines = [
        json.dumps(event(1))[:-1] + ', "q\\"uote": 1, "a.b": 2, "x/y~z": 3, "": 4}',
        json.dumps(event(2))[:-1] + ', "twice": "first", "twice": "second"}',
        json.dumps(event(3)),
    ]
    write_day(handmade, DAY, lines)
    result = one_day(handmade)
    assert (result.rows_input, result.rows_accepted) == (3, 3)
    with connect(handmade) as con:
        contexts = [
            json.loads(row[0]) for row in con.execute("select context from raw.events order by event_ts").fetchall()
        ]
    assert contexts == [
        {"device": "mobile", 'q"uote': 1, "a.b": 2, "x/y~z": 3, "": 4},
        {"device": "mobile", "twice": "first"},
        {"device": "mobile"},
    ]
