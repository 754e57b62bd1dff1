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

# The trigger never lets a cancellation into redis-py. redis-py's own handling of a command cancelled mid-reply,
# and its close after one, can wait without bound (redis/redis-py#3941; its teardown is shielded from cancellation),
# and the triggerer cancels this trigger whenever its asset's DAG changes or it shuts down, then waits for it. So each
# poll runs as a task of its own that a cancel leaves alone, every socket operation has a timeout, and the close
# waits for the poll and is itself bounded.
# A poll (two commands) or a connection attempt that takes longer than this counts as Redis being unavailable.
POLL_TIMEOUT_SECONDS = 10.0
# How long a cancelled trigger waits for its last poll to end and its client to close before it returns anyway.
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

        client = redis.Redis.from_url(
            self.url, socket_timeout=POLL_TIMEOUT_SECONDS, socket_connect_timeout=POLL_TIMEOUT_SECONDS
        )
        announced, poll = None, None
        try:
            while True:
                if poll is None or poll.done():  # a slow poll is waited for again, not doubled
                    poll = asyncio.ensure_future(self._waiting_and_oldest(client))
                # `wait`, not awaiting the task: a cancel raised here leaves the poll to end by itself.
                await asyncio.wait({poll}, timeout=POLL_TIMEOUT_SECONDS)
                waiting, oldest = self._answer(poll)
                if waiting and oldest != announced:
                    announced = oldest
                    yield TriggerEvent({"stream": self.stream, "waiting": waiting, "oldest": oldest.decode()})
                await asyncio.sleep(self.poll_seconds)
        finally:
            await self._close_within_bound(client, poll)

    async def _waiting_and_oldest(self, client) -> tuple[int, bytes | None]:
        """How many events the stream holds, and the id of the oldest one (None when it is empty); nothing
        waits while Redis is failing (restarting, say): try again next poll."""
        import redis.asyncio as redis

        try:
            waiting = await client.xlen(self.stream)
            oldest = (await client.xrange(self.stream, count=1) or [(None, None)])[0][0] if waiting else None
        except redis.RedisError as error:
            self.log.warning("cannot read Redis Stream %r: %s", self.stream, error)
            return 0, None
        return waiting, oldest

    def _answer(self, poll: asyncio.Future) -> tuple[int, bytes | None]:
        """The poll's answer; nothing waits while a poll is still under way past its bound."""
        if not poll.done():
            self.log.warning("reading Redis Stream %r took over %g s", self.stream, POLL_TIMEOUT_SECONDS)
            return 0, None
        return poll.result()

    async def _close_within_bound(self, client, poll: asyncio.Future | None) -> None:
        """Let the last poll end, then close `client`; return after CLOSE_TIMEOUT_SECONDS whatever those do.
        `asyncio.wait`, not `wait_for`: on its timeout `wait_for` cancels the close and then waits for it to end,
        without bound for a close that outlives its cancellation (redis-py shields its teardown); `wait` returns at
        the deadline and leaves the close running."""
        closing = asyncio.ensure_future(_close_after(client, poll))
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_SECONDS)
        if not done:
            _CLOSES_LEFT_RUNNING.add(closing)
            closing.add_done_callback(_CLOSES_LEFT_RUNNING.discard)
            self.log.warning(
                "closing the Redis client of stream %r took over %g s; left to finish in the background",
                self.stream,
                CLOSE_TIMEOUT_SECONDS,
            )


async def _close_after(client, poll: asyncio.Future | None) -> None:
    """Close `client` once `poll`, its last command, has ended (closing under a command in flight is what redis-py
    cannot always finish). A poll that failed otherwise than Redis failing is moot now."""
    if poll is not None:
        await asyncio.wait({poll})
        if not poll.cancelled():
            poll.exception()  # retrieved: asyncio would otherwise log "exception was never retrieved"
    await client.aclose()
