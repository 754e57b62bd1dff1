"""Pseudonymise a classified ingest batch before it is written (the hasher is serving/pseudonyms.py's).

Called once per batch by ``pipelines/ingest/batch.py``, on the rule engine's ``incoming`` rows (the
outcomes are in ``classified``: one row per quarantined line),
after every rule has run (the duplicate, bot and retry rules see the ids as sent: the mapping is
one to one, so their outcome is the same) and before anything reaches the warehouse:
- accepted rows: ``user_id`` becomes its pseudonym (one HMAC per distinct user of the batch);
- quarantined rows keep their raw content, protected so: every whole-token occurrence of the row's
  user id in it (JSON or CSV, the id as text) is replaced by its pseudonym, so the row still says
  what was wrong and whose it was, under the pseudonym. A row whose user id could not be read at
  all (not JSON, not UTF-8, too long, no user_id) cannot be pseudonymised: its raw content is
  withheld and replaced by ``[withheld: ...]`` with its length and SHA-256, so nothing in the
  warehouse can name a raw id. The landing file itself is untouched (its retention or a forget
  request removes it).
"""

from __future__ import annotations

import hashlib

from serving.pseudonyms import Pseudonymizer

WITHHELD = "[withheld: pseudonymised ingest could not read a user id in this row; {size} bytes, sha256 {digest}]"


def pseudonymize_batch(con, pseudonymize: Pseudonymizer) -> int:
    """Replace the user ids of `incoming` (a DuckDB table) by their pseudonyms, and protect the raw content
    of its quarantined rows (those `classified` names); returns the distinct users hashed."""
    import pyarrow as pa

    from pipelines.privacy.forget import replace_tokens

    users = [u for (u,) in con.execute("select distinct user_id from incoming where user_id is not null").fetchall()]
    mapping = pa.table({"raw_id": users, "pseudonym": [pseudonymize(u) for u in users]}, schema=pa.schema(
        [("raw_id", pa.string()), ("pseudonym", pa.string())]))  # fmt: skip
    quarantined = con.execute(
        "select line_number, raw, user_id from incoming join classified using (line_number)"
    ).fetchall()
    protected = []
    for line_number, raw, user_id in quarantined:
        if raw is None:
            continue
        if user_id is not None and user_id.strip(" "):
            text, _ = replace_tokens(raw.encode(), {user_id: pseudonymize(user_id)})
            protected.append((line_number, text.decode()))
        else:
            data = raw.encode()
            protected.append((line_number, WITHHELD.format(size=len(data), digest=hashlib.sha256(data).hexdigest())))
    raw_rows = pa.table(
        {"line_number": [n for n, _ in protected], "raw": [r for _, r in protected]},
        schema=pa.schema([("line_number", incoming_line_type(con)), ("raw", pa.string())]),
    )
    con.register("pseudonym_map", mapping)
    con.register("pseudonymised_raw", raw_rows)
    try:
        con.execute(
            "update incoming set user_id = pseudonym_map.pseudonym from pseudonym_map "
            "where incoming.user_id = pseudonym_map.raw_id"
        )
        con.execute(
            "update incoming set raw = pseudonymised_raw.raw from pseudonymised_raw "
            "where incoming.line_number = pseudonymised_raw.line_number"
        )
    finally:
        con.unregister("pseudonym_map")
        con.unregister("pseudonymised_raw")
    return len(users)


def incoming_line_type(con):
    """The Arrow type of incoming.line_number (an integer of the engine's choosing)."""
    import pyarrow as pa

    kinds = con.execute("select typeof(line_number) from incoming limit 1").fetchall()
    return {"INTEGER": pa.int32(), "BIGINT": pa.int64()}.get(kinds[0][0] if kinds else "BIGINT", pa.int64())
