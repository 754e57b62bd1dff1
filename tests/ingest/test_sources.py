"""Source adapters: MovieLens releases and Retailrocket logs through the same batch rules as landing files."""

import os

import pytest

from pipelines.cli import main
from pipelines.ingest import IngestError, ingest_path
from pipelines.settings import Settings
from pipelines.warehouse.connection import connect


def dataset(name: str):
    """A data set from ../shared/data; skipped locally if absent, a failure under CI=true."""
    path = Settings().datasets_dir / name
    if not path.exists():
        message = f"data set {path} not found (set RECFORGE_DATASETS_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def counts(settings) -> dict:
    with connect(settings) as con:
        events, users, rated, types, low, high = con.execute(
            "select count(*), count(distinct user_id), count(distinct item_id), list(distinct event_type), "
            "min(value), max(value) from raw.events"
        ).fetchone()
        items = con.execute("select count(*) from raw.items").fetchone()[0]
        quarantined = con.execute("select count(*) from quarantine.events").fetchone()[0]
    return {"events": events, "users": users, "rated_items": rated, "types": types, "items": items,
            "value_range": (low, high), "quarantined": quarantined}  # fmt: skip


def test_ml_latest_small_ingests_with_its_published_counts(settings):
    result = ingest_path(settings, "movielens", dataset("ml-latest-small"))
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (100_836, 100_836, 0)
    assert counts(settings) == {
        "events": 100_836, "users": 610, "rated_items": 9_724, "types": ["rating"], "items": 9_742,
        "value_range": (0.5, 5.0), "quarantined": 0,
    }  # fmt: skip


def test_ml_100k_ingests_with_its_published_counts(settings):
    result = ingest_path(settings, "movielens", dataset("ml-100k") / "u.data")
    assert (result.rows_input, result.rows_accepted) == (100_000, 100_000)
    found = counts(settings)
    assert (found["events"], found["users"], found["rated_items"], found["items"]) == (100_000, 943, 1_682, 1_682)
    with connect(settings) as con:
        category, genres = con.execute("select category, attributes from raw.items where item_id = '1'").fetchone()
    assert category == "Animation" and "Comedy" in genres  # Toy Story


def test_reimporting_a_data_set_replaces_it(settings):
    path = dataset("ml-100k")
    ingest_path(settings, "movielens", path)
    ingest_path(settings, "movielens", path)
    assert counts(settings)["events"] == 100_000


def test_movielens_dat_release_with_a_bad_row(settings, tmp_path):
    release = tmp_path / "ml-1m"
    release.mkdir()
    (release / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::x::978300760\n")
    (release / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::"
        "Animation|Children's|Musical\n".encode("latin-1")
    )
    result = ingest_path(settings, "movielens", release)
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (3, 2, 1)
    with connect(settings) as con:
        assert con.execute("select reason, line_number, raw from quarantine.events").fetchone() == (
            "schema_mismatch",
            3,
            '{"userId":"2","movieId":"1193","rating":"x","timestamp":"978300760"}',
        )
        assert con.execute("select item_id, category from raw.items order by item_id").fetchall() == [
            ("1193", "Drama"), ("661", "Animation")
        ]  # fmt: skip


def import_retailrocket(settings, tmp_path, *rows: str):
    """Import a Retailrocket events.csv of these rows (under its header)."""
    log = tmp_path / "events.csv"
    log.write_text("\n".join(["timestamp,visitorid,event,itemid,transactionid", *rows]) + "\n")
    return ingest_path(settings, "retailrocket", log)


def test_retailrocket_events_map_to_the_canonical_types(settings, tmp_path):
    result = import_retailrocket(
        settings, tmp_path,
        "1433221332117,257597,view,355908,",
        "1433224214164,992329,addtocart,248676,",
        "1433224214165,992329,transaction,248676,4000",
        "1433224214166,992329,wishlist,248676,",
        "not-a-time,992329,view,248676,",
    )  # fmt: skip
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (5, 3, 2)
    with connect(settings) as con:
        rows = con.execute("select user_id, item_id, event_type, context from raw.events order by event_ts").fetchall()
        reasons = con.execute("select line_number, reason from quarantine.events order by 1").fetchall()
        items = con.execute("select item_id, in_stock from raw.items order by item_id").fetchall()
    assert rows == [
        ("257597", "355908", "view", None),
        ("992329", "248676", "add_to_cart", None),
        ("992329", "248676", "purchase", '{"transaction_id":"4000"}'),
    ]
    assert reasons == [(5, "unknown_event_type"), (6, "schema_mismatch")]
    assert items == [("248676", True), ("355908", True)]


def test_a_bad_retailrocket_row_is_quarantined_and_the_file_kept(settings, tmp_path):
    result = import_retailrocket(
        settings, tmp_path,
        "1433221332117,257597,view,355908,",
        "1433224214164,992329,addtocart,248676,,surplus",
        "1433224214165,992329,view,248676,",
    )  # fmt: skip
    assert (result.rows_input, result.rows_accepted, result.rows_quarantined) == (3, 2, 1)
    with connect(settings) as con:
        assert con.execute("select line_number, reason, raw from quarantine.events").fetchall() == [
            (3, "malformed_row", "1433224214164,992329,addtocart,248676,,surplus")
        ]


def test_a_retailrocket_file_without_its_columns_fails_naming_file_and_column(settings, tmp_path):
    log = tmp_path / "events.csv"
    log.write_text("timestamp,visitor,event,itemid\n1433221332117,1,view,2\n")
    with pytest.raises(IngestError, match=r"events.csv: missing required column\(s\) visitorid"):
        ingest_path(settings, "retailrocket", log)


def test_the_cli_imports_a_data_set_and_names_a_wrong_path(settings, monkeypatch, capsys):
    monkeypatch.setenv("RECFORGE_HOME", str(settings.home))
    assert main(["ingest", "--source", "movielens", "--path", str(dataset("ml-100k"))]) == 0
    assert "100000 rows in, 100000 accepted" in capsys.readouterr().out
    assert main(["ingest", "--source", "movielens", "--path", "/nowhere/ml-20m"]) == 1
    assert "recforge ingest: error: /nowhere/ml-20m: no such file or directory" in capsys.readouterr().err
