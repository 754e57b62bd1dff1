"""The scaled configuration's schedule for micro-batches: the collector's Redis Stream itself.

``RedisStreamTrigger`` is an Airflow event trigger (``BaseEventTrigger``) for an ``AssetWatcher``:
the triggerer runs it, it polls the stream (``XLEN``, the oldest entry's id), and it fires whenever
the stream holds events that have not been ingested and that it has not announced yet (the
ingest's drain deletes what it has made durable, so what the stream still holds is what waits).
``recforge_stream_ingest`` is then scheduled by that asset instead of a cron: a run starts within
``poll_seconds`` of the first event instead of up to five minutes later, and none starts while
nothing arrives. Polling two Redis commands every few seconds costs Redis nothing; a blocking
``XREAD`` would not tell entries this trigger already announced from new ones across restarts.

Imported only by the DAG file and the triggerer (it imports Airflow and redis).
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

# redis-py's asyncio close can wait forever for a socket's close when the command under way was cancelled
# (redis/redis-py#3941); the triggerer cancels this trigger and waits for it, so the close is bounded.
CLOSE_TIMEOUT_SECONDS = 2.0
# Closes still running past that bound: asyncio holds tasks only weakly, so one left unreferenced could be
# destroyed while pending; each leaves this set when it ends.
_CLOSES_LEFT_RUNNING: set[asyncio.Task] = set()


class RedisStreamTrigger(BaseEventTrigger):
    """Fires when the Redis Stream `stream` holds events and its oldest one was not announced before."""

    def __init__(self, url: str, stream: str, poll_seconds: float = 5.0):
        super().__init__()
        self.url = url
        self.stream = stream
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"url": self.url, "stream": self.stream, "poll_seconds": self.poll_seconds},
        )

    async def run(self):
        import redis.asyncio as redis

        client = redis.Redis.from_url(self.url)
        announced = None
        try:
            while True:
                try:
                    waiting = await client.xlen(self.stream)
                    oldest = (await client.xrange(self.stream, count=1) or [(None, None)])[0][0] if waiting else None
                except redis.RedisError as error:  # Redis restarting: try again next poll
                    self.log.warning("cannot read Redis Stream %r: %s", self.stream, error)
                    waiting, oldest = 0, None
                if waiting and oldest != announced:
                    announced = oldest
                    yield TriggerEvent({"stream": self.stream, "waiting": waiting, "oldest": oldest.decode()})
                await asyncio.sleep(self.poll_seconds)
        finally:
            await self._close_within_bound(client)

    async def _close_within_bound(self, client) -> None:
        """Close `client`, waiting at most CLOSE_TIMEOUT_SECONDS. `asyncio.wait`, not `wait_for`: on its timeout
        `wait_for` cancels the close and then waits for it to end, without bound for a close that outlives its
        cancellation (redis-py shields its teardown); `wait` returns at the deadline and leaves the close running."""
        closing = asyncio.ensure_future(client.aclose())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_SECONDS)
        if not done:
            _CLOSES_LEFT_RUNNING.add(closing)
            closing.add_done_callback(_CLOSES_LEFT_RUNNING.discard)
            self.log.warning(
                "closing the Redis client of stream %r took over %.0f s; left to finish in the background",
                self.stream,
                CLOSE_TIMEOUT_SECONDS,
            )
