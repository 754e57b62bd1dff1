"""Reading a run's next JSONL file ahead (pipelines/ingest/read_ahead.py): in order, one file ahead, the
same rows as reading in place, and a file that cannot be read failing its run by name, writing nothing."""

import gzip
import json
import threading
from datetime import timedelta

import duckdb
import pyarrow as pa
import pytest

from pipelines.ingest import IngestError, ingest_interval
from pipelines.ingest import read_ahead as read_ahead_module
from pipelines.ingest.read_ahead import ReadAhead
from pipelines.ingest.run import landing_day_dir
from pipelines.ingest.sources import get_source, read_jsonl
from pipelines.warehouse.connection import connect
from tests.ingest.test_ingest import DAY, event, write_day

RECFORGE = get_source("recforge")


@pytest.fixture
def recorded_reads(monkeypatch):
    """`read_jsonl` replaced by a reader that records which file it read, in order, and returns a marker."""
    reads: list[str] = []
    done = {name: threading.Event() for name in ("a.jsonl", "b.jsonl", "c.jsonl")}

    def reader(path, max_line_bytes):
        reads.append(path.name)
        done[path.name].set()
        return pa.table({"file": [path.name]})

    monkeypatch.setattr(read_ahead_module, "read_jsonl", reader)
    return reads, done


def test_files_are_read_in_order_and_never_more_than_one_ahead(tmp_path, recorded_reads):
    reads, done = recorded_reads
    a, b, c = (tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl"))
    with ReadAhead(RECFORGE, [a, b, c], 1000) as ahead:
        assert done["a.jsonl"].wait(5)  # the first file is read before anyone asks for it
        assert ahead.take(a).column("file").to_pylist() == ["a.jsonl"]
        assert done["b.jsonl"].wait(5)
        assert reads == ["a.jsonl", "b.jsonl"]  # c waits until b is taken: at most one file ahead
        assert ahead.take(b).column("file").to_pylist() == ["b.jsonl"]
        assert ahead.take(c).column("file").to_pylist() == ["c.jsonl"]
    assert reads == ["a.jsonl", "b.jsonl", "c.jsonl"]  # each read once


def test_a_file_taken_out_of_order_is_read_then_and_reading_goes_on_after_it(tmp_path, recorded_reads):
    reads, _ = recorded_reads
    a, b, c = (tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl"))
    with ReadAhead(RECFORGE, [a, b, c], 1000) as ahead:
        assert ahead.take(b).column("file").to_pylist() == ["b.jsonl"]
        assert ahead.take(a).column("file").to_pylist() == ["a.jsonl"]
        assert ahead.take(c).column("file").to_pylist() == ["c.jsonl"]
    assert sorted(reads) == ["a.jsonl", "b.jsonl", "c.jsonl"]  # none twice


def test_files_not_read_line_by_line_are_left_to_their_stage(tmp_path, recorded_reads):
    reads, _ = recorded_reads
    with ReadAhead(RECFORGE, [tmp_path / "day.csv", tmp_path / "day.parquet"], 1000) as ahead:
        assert ahead.take(tmp_path / "day.csv") is None
        assert ahead.take(tmp_path / "day.parquet") is None
    assert reads == []


def test_lines_read_ahead_give_the_same_incoming_rows_as_lines_read_in_place(tmp_path):
    path = tmp_path / "a.jsonl"
    good = [json.dumps(event(n)) for n in range(1, 4)]
    path.write_text("\n".join([good[0], "not json", "", good[1], '{"event_id": 5}', good[2]]) + "\n")
    staged = []
    for lines in (None, read_jsonl(path, 1000)):
        con = duckdb.connect()
        RECFORGE.stage(con, path, 1000, lines)
        staged.append(con.execute("select * from incoming order by line_number").fetchall())
        con.close()
    assert staged[0] == staged[1]
    assert [row[0] for row in staged[0]] == [1, 2, 4, 5, 6]  # the blank line 3 is not a row


def test_lines_read_ahead_for_a_file_not_read_as_jsonl_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"day\.csv: lines read ahead, but recforge does not read this file as JSONL"):
        RECFORGE.stage(duckdb.connect(), tmp_path / "day.csv", 1000, pa.table({"raw": ["x"]}))


def test_a_read_ahead_that_failed_for_a_file_never_taken_does_not_fail_the_close(tmp_path, monkeypatch):
    def reader(path, max_line_bytes):
        if path.name == "b.jsonl":
            raise OSError("disk gone")
        return pa.table({"file": [path.name]})

    monkeypatch.setattr(read_ahead_module, "read_jsonl", reader)
    with ReadAhead(RECFORGE, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], 1000) as ahead:
        ahead.take(tmp_path / "a.jsonl")  # b is read (and fails) ahead; the run ends before taking it


def test_a_truncated_gzip_file_fails_its_day_by_name_and_the_day_keeps_its_earlier_rows(handmade):
    write_day(handmade, DAY, [json.dumps(event(1))])
    ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    whole = gzip.compress(("\n".join(json.dumps(event(n)) for n in range(2, 500)) + "\n").encode())
    (landing_day_dir(handmade, DAY.date()) / "late.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestError, match=r"late\.jsonl\.gz: cannot be read: Compressed file ended"):
        ingest_interval(handmade, DAY, DAY + timedelta(days=1))
    with connect(handmade) as con:
        assert con.execute("select event_id from raw.events").fetchall() == [("t1",)]
        assert con.execute("select count(*) from raw.batches").fetchone()[0] == 1
