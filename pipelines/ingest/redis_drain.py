"""One way to empty a Redis Stream into files: read as a consumer group's one consumer, write, then acknowledge.

Shared by the collector's event stream (``stream_drain.py``) and serving's impression stream
(``impression_stream.py``). The consumer reads its own pending entries first (an earlier run read them
and died before acknowledging), then new ones; `write` makes each read durable (and must recognise a
read it already wrote), and only then are the entries acknowledged (``XACK``) and deleted (``XDEL``).
"""

from __future__ import annotations

from collections.abc import Callable


def drain_stream(
    url: str, stream: str, group: str, consumer: str, count: int, write: Callable[[list], object], max_entries: int
) -> int:
    """Move up to `max_entries` entries of `stream` through `write`, `count` per read; returns how many moved."""
    import redis  # the scaled extra: only the Redis configurations call this

    client = redis.Redis.from_url(url)
    try:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        moved = 0
        for start in ("0", ">"):  # "0": this consumer's pending entries; ">": entries never delivered
            while moved < max_entries:
                reply = client.xreadgroup(group, consumer, {stream: start}, count=count)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                write(entries)
                ids = [entry_id for entry_id, _ in entries]
                client.xack(stream, group, *ids)
                client.xdel(stream, *ids)
                moved += len(entries)
        return moved
    finally:
        client.close()
