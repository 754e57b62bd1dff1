"""The file-level pieces of forgetting: the search that proves an id gone, and the rewrite of landing
files in every format ingest reads (the simulated log is JSONL only)."""

from __future__ import annotations

import gzip
import json

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.privacy.forget import compact_warehouse, forget_in_landing
from pipelines.privacy.scan import find_ids
from pipelines.warehouse.connection import connect

ROWS = [
    {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view"},
    {"event_id": "e2", "user_id": "u12", "item_id": "i2", "event_type": "view"},
    {"event_id": "e3", "user_id": "u1", "item_id": "i3", "event_type": "click"},
]


def test_the_search_finds_an_id_inside_compressed_files_and_only_as_a_whole_token(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet", compression="zstd")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"user_id": "u7"}\n'))
    np.savez_compressed(tmp_path / "c.npz", user_ids=np.array(["u8", "u9"]))  # fixed-width UTF-32, touching
    (tmp_path / "d.txt").write_text("u100 xu5 u5x")
    found = {hit.path.name: hit.how for hit in find_ids(tmp_path, ["u1", "u7", "u9", "u5"])}
    assert found == {"a.parquet": "parquet:user_id", "b.jsonl.gz": "gzip", "c.npz": "zip:user_ids.npy"}
    assert b"u7" not in (tmp_path / "b.jsonl.gz").read_bytes()  # a raw grep would miss it


def test_landing_files_of_every_format_lose_the_users_rows_and_keep_the_others(settings):
    day = settings.landing_dir / "events" / "date=2026-01-01"
    day.mkdir(parents=True)
    lines = "".join(json.dumps(row) + "\n" for row in ROWS) + '{"user_id": "u1", broken\n'
    (day / "a.jsonl").write_text(lines)
    (day / "b.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    pd.DataFrame(ROWS).to_csv(day / "c.csv", index=False)
    pq.write_table(pa.Table.from_pylist(ROWS), day / "d.parquet")
    (settings.landing_dir / "simulation.json").write_text(json.dumps({"bot_user_ids": ["u1", "u12"], "users": 3}))
    outcome = forget_in_landing(settings, ["u1"])
    assert outcome.rows_removed == 3 + 3 + 2 + 2 + 1 and "5 file(s)" in outcome.note
    assert find_ids(settings.landing_dir, ["u1"]) == []
    assert [json.loads(line)["user_id"] for line in (day / "a.jsonl").read_text().splitlines()] == ["u12"]
    assert gzip.decompress((day / "b.jsonl.gz").read_bytes()).decode() == json.dumps(ROWS[1]) + "\n"
    assert pd.read_csv(day / "c.csv").to_dict("records") == [ROWS[1]]
    assert pq.read_table(day / "d.parquet").to_pylist() == [ROWS[1]]
    assert json.loads((settings.landing_dir / "simulation.json").read_text()) == {"bot_user_ids": ["u12"], "users": 3}
    assert forget_in_landing(settings, ["u1"]).rows_removed == 0  # idempotent


def test_deleted_rows_stay_in_duckdbs_file_until_it_is_rewritten(settings):
    """Why compact_warehouse exists: a delete and a checkpoint leave the bytes in free blocks."""
    secret = "u" + "7" * 40  # long and unique, so the plain bytes are recognisable
    with connect(settings) as con:
        con.execute(
            "create table raw.notes as select md5(cast(range as varchar)) || "
            "case when range = 5 then ? else '' end as note from range(200)",
            [secret],
        )
        con.execute("checkpoint")
        con.execute("delete from raw.notes where strpos(note, ?) > 0", [secret])
        con.execute("checkpoint")
    assert secret.encode() in settings.warehouse_path.read_bytes()
    outcome = compact_warehouse(settings, [secret])
    assert secret.encode() not in settings.warehouse_path.read_bytes() and "fresh file" in outcome.note
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from raw.notes").fetchone() == (199,)


def test_an_id_across_two_pieces_of_a_large_file_is_still_found(tmp_path, monkeypatch):
    import pipelines.privacy.scan as scan

    monkeypatch.setattr(scan, "CHUNK_BYTES", 64)
    path = tmp_path / "big.log"
    for offset in range(58, 70):  # the id starts just before, on and just after the piece boundary
        path.write_bytes(b"-" * (offset - 1) + b" u000042 " + b"-" * 100)
        assert scan.file_holds(path, scan.needles("u000042")), offset
    path.write_bytes(b"-" * 60 + b" u0000421 " + b"-" * 100)
    assert not scan.file_holds(path, scan.needles("u000042"))
