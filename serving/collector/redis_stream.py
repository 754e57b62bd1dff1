"""The scaled configuration's log: a Redis Stream with a consumer group.

Each accepted event is one stream entry ``{"day": "YYYY-MM-DD", "event": <the JSON line>}`` (the
day is its landing day, as a segment's folder says on the embedded default). A request's events
go in one pipelined round trip of ``XADD`` (no ``MAXLEN``: the stream is never trimmed by the
collector; the consumer acknowledges and deletes what it has ingested), and the answer is sent
once Redis has answered every ``XADD``. The consumer group is created when the server starts
(``XGROUP CREATE ... 0 MKSTREAM``), so the events of the very first request are already waiting
for the group.

Durability is then Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged
event survives a power loss; with ``appendfsync everysec`` (Redis's default when AOF is on) up to a
second of acknowledged events can be lost with the machine, and without AOF everything since the
last RDB snapshot. The server logs which of these it found when it starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date

from serving.collector.segments import CollectorUnavailable

log = logging.getLogger(__name__)


class RedisStreamWriter:
    """Appends events to a Redis Stream; ``append`` returns once Redis has accepted every one."""

    def __init__(self, url: str, stream: str, group: str, on_commit: Callable[[int, float], None] | None = None):
        self.url = url
        self.stream = stream
        self.group = group
        self.on_commit = on_commit
        self._client = None
        self._group_ready = False

    async def start(self) -> None:
        import redis.asyncio as redis  # the scaled extra; only this backend needs it

        self._client = redis.Redis.from_url(self.url)
        try:
            await self._create_group()
        except redis.RedisError as error:
            # The server still starts (recommendations do not need Redis); events get 503 until it answers.
            log.error("collector: Redis at %s is not reachable (%s); POST /v1/events answers 503", self.url, error)
            return
        durability = await self.durability()
        level = logging.INFO if durability.startswith("Redis AOF on, appendfsync always") else logging.WARNING
        log.log(level, "collector: appending to Redis Stream %r, consumer group %r; %s", self.stream, self.group,
                durability)  # fmt: skip

    async def _create_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists: before the first event is added,
        so that the group's consumer sees every event from the start of the stream."""
        import redis.asyncio as redis

        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def durability(self) -> str:
        """What Redis promises about an acknowledged event, from its AOF settings."""
        try:
            config = await self._client.config_get("append*")
        except Exception as error:  # CONFIG may be renamed or forbidden on managed Redis
            return f"Redis durability unknown (CONFIG GET refused: {error})"
        aof = config.get(b"appendonly", config.get("appendonly"))
        fsync = config.get(b"appendfsync", config.get("appendfsync"))
        aof, fsync = (v.decode() if isinstance(v, bytes) else v for v in (aof, fsync))
        if aof != "yes":
            return "Redis has no AOF (appendonly no): events since its last snapshot are lost if Redis stops"
        return f"Redis AOF on, appendfsync {fsync}"

    async def append(self, day: date, lines: list[bytes]) -> None:
        import redis.asyncio as redis

        if self._client is None:
            raise CollectorUnavailable("events not stored: the Redis backend is not started")
        started = time.perf_counter()
        day_text = day.isoformat()
        try:
            if not self._group_ready:  # Redis was down when the server started
                await self._create_group()
            async with self._client.pipeline(transaction=False) as pipe:
                for line in lines:
                    pipe.xadd(self.stream, {"day": day_text, "event": line})
                await pipe.execute()
        except redis.RedisError as error:
            raise CollectorUnavailable(f"events not stored: Redis: {error}") from None
        if self.on_commit is not None:
            self.on_commit(len(lines), time.perf_counter() - started)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
