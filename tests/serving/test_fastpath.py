"""serving/_fastpath.c: the common recommendations answer in C must be the Python answer, byte for byte.

The extension is optional at install (no compiler, no fast path); CI builds it, so there a
missing extension fails these tests instead of skipping them.
"""

import json
import os
import re

import numpy as np
import pytest

from pipelines.publication.publish import current_version
from serving.dependencies import ID_PATTERN
from serving.publication import Publication, PublicationError
from tests.serving.test_serving import client_for, resealed_with_user_recs

try:
    from serving import _fastpath
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("serving._fastpath is not built (no C compiler at install)", allow_module_level=True)


@pytest.fixture(scope="module")
def live(published) -> Publication:
    return Publication(published.published_dir / current_version(published.published_dir))


RID = b"0123456789abcdef0000002a"  # a request id as serving/impressions/request_ids.py makes them


def fast_body(live, user, query, request_id=RID):
    answer = live.fast_answer(user, query, request_id)
    return None if answer is None else answer[0]


def test_every_user_and_k_gets_the_python_paths_bytes(live):
    assert live.fast_answer is not None
    assert len(live.reason_names) > 2, "the real publication should have similar_to reasons beside model/popular"
    for user in live.user_ids.tolist():
        position = live.user_position(user)
        for k in (1, 7, live.top_n):
            assert fast_body(live, user, b"k=%d" % k) == live.user_answer(user, position, k, None, None, RID), (user, k)
        assert fast_body(live, user, b"") == live.user_answer(user, position, 10, None, None, RID)


def test_the_c_path_returns_the_users_position_and_the_slates_length_for_the_impression_log(live):
    user = str(live.user_ids[2])
    body, position, count = live.fast_answer(user, b"k=7", b"r-1")
    assert position == live.user_position(user)
    assert count == len(json.loads(body)["items"]) == min(7, int(live.offsets[position + 1] - live.offsets[position]))
    assert json.loads(body)["request_id"] == "r-1"


@pytest.mark.parametrize("request_id", [b"", b"a b", b'a"b', b"x" * 129])
def test_a_request_id_outside_the_id_alphabet_is_refused_by_the_c_path(live, request_id):
    with pytest.raises(ValueError, match="request_id"):
        live.fast_answer(str(live.user_ids[0]), b"", request_id)


def test_the_answer_is_json_of_the_stored_list(live):
    user = live.user_ids[0]
    body = json.loads(fast_body(live, str(user), b"k=5"))
    start = int(live.offsets[0])
    assert body["user_id"] == user and body["version"] == live.version and body["fallback"] is False
    assert [item["item_id"] for item in body["items"]] == [live.item_ids[r] for r in live.rec_items[start : start + 5]]
    np.testing.assert_allclose([item["score"] for item in body["items"]], live.rec_scores[start : start + 5], rtol=1e-5)


@pytest.mark.parametrize(
    "query",
    [b"k=0", b"k=51", b"k=99999999999", b"k=ten", b"k=", b"k=5&exclude=i1", b"exclude=i1", b"K=5", b"k=+5", b"k=5 "],
)
def test_queries_it_does_not_cover_go_to_the_python_path(live, query):
    assert live.top_n == 50
    assert live.fast_answer(str(live.user_ids[0]), query, RID) is None


@pytest.mark.parametrize("user_id", ["never-seen", "", "bad id", "u\u00e9", "x" * 129])
def test_unknown_or_malformed_ids_go_to_the_python_path(live, user_id):
    assert live.fast_answer(user_id, b"", RID) is None


def tables_for(user_ids: list[str], lists: list[list[int]], n_items: int = 3, **overrides):
    """Hand-made tables: user i's list holds the given item rows, scores 0.5, 0.25, ... and reason 0."""
    ids = np.array(user_ids, dtype=np.str_)
    order = np.argsort(ids)
    ids, lists = ids[order], [lists[i] for i in order]
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(items) for items in lists], out=offsets[1:])
    items = np.array([row for items in lists for row in items], dtype=np.int32)
    scores = np.array([0.5**rank for items in lists for rank in range(1, len(items) + 1)], dtype=np.float32)
    item_json = b"".join(b'{"item_id":"i%d","score":' % row for row in range(n_items))
    item_offsets = np.array([0] + [len(b'{"item_id":"i%d","score":' % r) for r in range(n_items)]).cumsum()
    arguments = {
        "user_ids": ids,
        "id_width": ids.itemsize // 4,
        "offsets": offsets,
        "items": items,
        "scores": scores,
        "reasons": np.zeros(len(items), dtype=np.uint8),
        "reason_width": 1,
        "item_json": item_json,
        "item_offsets": item_offsets.astype(np.int64),
        "reason_json": b',"reason":"model"}',
        "reason_offsets": np.array([0, len(b',"reason":"model"}')], dtype=np.int64),
        "head": b',"version":"v1","fallback":false,"items":',
        "top_n": 10,
    }
    arguments.update(overrides)
    return _fastpath.prepare(*arguments.values())


def test_ids_of_every_allowed_character_are_found_and_others_are_not():
    allowed = "AZaz09_.:-"
    tables = tables_for([allowed, "u1", "a b"], [[0, 1], [2], [0]])
    answer = json.loads(_fastpath.user_answer(tables, allowed, b"k=2", RID)[0])
    assert answer == {
        "user_id": allowed,
        "request_id": RID.decode(),
        "version": "v1",
        "fallback": False,
        "items": [
            {"item_id": "i0", "score": 0.5, "reason": "model"},
            {"item_id": "i1", "score": 0.25, "reason": "model"},
        ],
    }
    assert re.fullmatch(ID_PATTERN, allowed)
    assert _fastpath.user_answer(tables, "a b", b"", RID) is None  # stored, but not an id the API accepts
    assert _fastpath.user_answer(tables, "u", b"", RID) is None
    assert _fastpath.user_answer(tables, "u10", b"", RID) is None


def test_a_user_with_an_empty_list_gets_an_empty_items_array():
    tables = tables_for(["u1", "u2"], [[], [1]])
    body, position, count = _fastpath.user_answer(tables, "u1", b"", RID)
    assert json.loads(body)["items"] == [] and count == 0 and position == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"items": np.array([0, 5], dtype=np.int32)}, "item row 5 outside 0..2"),
        ({"reasons": np.array([0, 1], dtype=np.uint8)}, "reason code 1 without a fragment"),
        ({"scores": np.zeros(3, dtype=np.float32)}, "do not describe the same lists"),
        ({"offsets": np.array([0, 2, 1, 2], dtype=np.int64)}, "do not describe the same lists"),
        ({"item_offsets": np.array([0, 5, 9, 400], dtype=np.int64)}, "fragment offsets do not cover"),
        ({"reason_width": 3}, "reason_width 1, 2 or 4"),
        ({"id_width": 129}, "id_width must be 1..128"),
    ],
)
def test_inconsistent_tables_are_refused_when_prepared(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tables_for(["u1", "u2"], [[0], [1]], **overrides)


def test_readyz_says_the_c_fast_path_is_in_use(published):
    with client_for(published) as client:
        assert client.get("/readyz").json()["fast_path"] is True


def test_the_server_answers_the_same_bytes_with_and_without_the_fast_path(published):
    user = str(Publication(published.published_dir / current_version(published.published_dir)).user_ids[3])
    headers = {"X-Request-ID": RID.decode()}  # the same id for both paths: the bytes must then be the same
    with client_for(published) as client:
        live = client.app.state.store.current
        fast = [client.get(f"/v1/users/{user}/recommendations", params=p, headers=headers) for p in ({}, {"k": 7})]
        live.fast_answer = None
        slow = [client.get(f"/v1/users/{user}/recommendations", params=p, headers=headers) for p in ({}, {"k": 7})]
    assert [a.content for a in fast] == [a.content for a in slow]
    assert {a.headers["x-request-id"] for a in fast + slow} == {RID.decode()}
    fast = [a.content for a in fast]
    assert len(json.loads(fast[1])["items"]) == 7


def test_a_publication_with_a_score_that_is_not_a_number_is_refused(published, tmp_path):
    def not_a_number(recs):
        recs.loc[3, "score"] = np.nan

    directory = resealed_with_user_recs(published, tmp_path / "home", not_a_number)
    with pytest.raises(PublicationError, match="user_recs.parquet has a score that is not a finite number"):
        Publication(directory)


def test_scores_are_written_exactly_as_printf_6g_writes_them():
    """The C formatter (integer arithmetic, no printf) against Python's b"%.6g" of the same float32."""
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.integers(-12, 17, 60_000)
    powers = np.array([10.0**k for k in range(-11, 16)], dtype=np.float32)
    values = np.concatenate(
        [
            rng.standard_normal(40_000).astype(np.float32),
            (rng.random(60_000) * magnitudes * rng.choice([-1, 1], 60_000)).astype(np.float32),
            powers,
            np.nextafter(powers, np.float32(np.inf)),
            np.nextafter(powers, np.float32(0)),
            np.arange(1_000_000, 1_000_100, dtype=np.float32) * 10 + 5,  # exact ties at the 7th digit
            np.arange(100_000, 100_200, dtype=np.float32) + 0.5,
            np.array([0.0, -0.0, 999999.5, 9.999995e-5, 1e-45, 3.4e38, 1e15, 1e-10], dtype=np.float32),
        ]
    )
    wrong = [
        (v, _fastpath.format_score(v), b"%.6g" % v) for v in values.tolist() if _fastpath.format_score(v) != b"%.6g" % v
    ]
    assert wrong == []


def test_without_the_extension_a_publication_answers_through_python_alone(published, monkeypatch, live):
    import serving.publication

    monkeypatch.setattr(serving.publication, "_fastpath", None)
    plain = Publication(published.published_dir / current_version(published.published_dir))
    assert plain.fast_answer is None and plain.fast_path_bytes == 0
    assert plain.list_bytes == live.list_bytes - live.fast_path_bytes
    user = str(plain.user_ids[5])
    assert plain.user_answer(user, plain.user_position(user), 4, None, None, RID) == fast_body(live, user, b"k=4")


def test_the_common_request_skips_the_general_path_and_still_logs_its_slate(published, monkeypatch):
    """No pseudonyms, experiment, session or exploration: the C answer straight back, its impression queued;
    exploration on, the same request takes the general path (which draws the swapped slots)."""
    from serving.routers import recommendations

    entered = []
    general = recommendations._answer
    monkeypatch.setattr(recommendations, "_answer", lambda *args: entered.append(args[3]) or general(*args))
    with client_for(published) as client:
        live = client.app.state.store.current
        user = str(live.user_ids[3])
        logged = []
        monkeypatch.setattr(client.app.state.impressions, "stored_slate", lambda *args: logged.append(args))
        answer = client.get(f"/v1/users/{user}/recommendations", params={"k": 7}, headers={"X-Request-ID": "r-7"})
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "r-7"
        assert answer.content == live.fast_answer(user, b"k=7", b"r-7")[0]
        assert entered == []
        assert logged == [(b"r-7", user, live, live.user_position(user), 7)]
        client.app.state.exploration_epsilon = 0.5
        assert client.get(f"/v1/users/{user}/recommendations").status_code == 200
        assert entered == [user]
