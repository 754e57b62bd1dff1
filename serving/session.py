"""Session-aware answers: each user's latest events, blended into the precomputed list at request time.

The collector (``POST /v1/events``) hands every durably acknowledged event to the session store;
``GET /v1/users/{id}/recommendations`` asks one question before its C fast path: "does this user
have session state?" (one dict lookup, ``Sessions.active``). Only users who do take ``session_answer``.

Stores
- ``MemorySessions`` (the embedded default): in this process, at most ``session_max_events`` per
  user, at most ``session_max_users`` users (the least recently active dropped first), events older
  than ``session_ttl_seconds`` ignored and their users forgotten.
- ``RedisSessions`` (``RECFORGE_COLLECTOR_BACKEND=redis``): one Redis list per user
  (``LPUSH``/``LTRIM``/``EXPIRE``: same bounds, Redis expires idle users), shared by every replica.
  The hot path must not pay a Redis round trip for the many users without a session, so each replica
  keeps an index of the users who have one: the replica that collects an event marks the user at
  once, and announces it on a Pub/Sub channel that every replica listens to (a replica that starts
  late reads the existing keys with ``SCAN``). Only a user in that index costs an ``LRANGE``.

Scoring (``blend``), for a user with fresh session events and ``w = session_weight``:

    score(item) = (1 - w) * list(item) + w * max over session items a of decay(a) * max(0, cos(a, item))

where ``list(item)`` is the item's published score min-max normalised over the user's stored list
(1 for the best, 0 for the last; 0 for an item not in it), ``cos`` the item index's inner product
(its vectors are normalised) over the FAISS neighbours of the ``session_anchor_items`` most recent
distinct session items, and ``decay(a) = 0.5 ** (age(a) / session_half_life_seconds)``. An item whose
session term outweighs its list term carries the reason ``session:<a>``; the others keep their
published reason. A visitor the publication does not know gets the session term alone, then the
popular list to fill ``k``. Every rule still applies: items bought in the session (``purchase``
events) disappear, and so do blocked items and those named in ``exclude``; a session item is never
its own neighbour.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict, deque
from operator import itemgetter

import numpy as np
import orjson

from serving.config import ServingSettings
from serving.dependencies import checked_id, checked_k, excluded_ids, filters, live_publication
from serving.events import parse_event_ts
from serving.impressions.log import RECOMMENDATIONS

log = logging.getLogger(__name__)

PURCHASE = "purchase"
# A session event as kept: (event time in epoch seconds, item id, event type).
SessionEvent = tuple[float, str, str]


def session_events(lines: list[bytes]) -> list[tuple[str, SessionEvent]]:
    """(user, event) of each accepted JSON line, as the collector stored it (already validated)."""
    found = []
    for line in lines:
        event = orjson.loads(line)
        instant = parse_event_ts(event["event_ts"])
        found.append((str(event["user_id"]), (instant.timestamp(), str(event["item_id"]), event["event_type"])))
    return found


class MemorySessions:
    """The embedded default: sessions in this process, bounded in users, events per user and age."""

    def __init__(self, max_events: int, ttl_seconds: float, max_users: int):
        self.max_events, self.ttl_seconds, self.max_users = max_events, ttl_seconds, max_users
        # user -> (last arrival, newest-last events); least recently active first.
        self.active: OrderedDict[str, tuple[float, deque]] = OrderedDict()
        self.answers = 0  # session-aware answers given (tests and the benchmark read it)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def record(self, lines: list[bytes]) -> None:
        self.add(session_events(lines), time.time())

    def add(self, events: list[tuple[str, SessionEvent]], now: float) -> None:
        active = self.active
        for user, event in events:
            entry = active.pop(user, None)
            kept = entry[1] if entry is not None else deque(maxlen=self.max_events)
            kept.append(event)
            active[user] = (now, kept)  # re-inserted last: the most recently active
        while len(active) > self.max_users:
            active.popitem(last=False)
        stale = now - self.ttl_seconds
        while active and next(iter(active.values()))[0] < stale:  # idle users, oldest first
            active.popitem(last=False)

    async def recent(self, user: str, now: float) -> list[SessionEvent]:
        return self.fresh(user, now)

    def fresh(self, user: str, now: float) -> list[SessionEvent]:
        """The user's fresh events, newest first; a user left with none is forgotten."""
        entry = self.active.get(user)
        fresh = [e for e in reversed(entry[1]) if now - e[0] <= self.ttl_seconds] if entry is not None else []
        if not fresh:
            self.active.pop(user, None)
        return fresh


class RedisSessions:
    """The scaled configuration: per-user Redis lists shared by every replica, indexed locally."""

    def __init__(self, url: str, prefix: str, max_events: int, ttl_seconds: float, max_users: int):
        self.url, self.prefix = url, prefix
        self.channel = prefix + "updates"
        self.max_events, self.ttl_seconds, self.max_users = max_events, ttl_seconds, max_users
        self.active: OrderedDict[str, float] = OrderedDict()  # user -> when this replica last heard of an event
        self.answers = 0
        self._client = None
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        import redis.asyncio as redis  # the scaled extra; only this store needs it

        self._client = redis.Redis.from_url(self.url)
        try:
            async for key in self._client.scan_iter(match=self.prefix + "u:*", count=1000):
                self._mark(key.decode()[len(self.prefix) + 2 :], time.time())
        except redis.RedisError as error:
            log.error("sessions: Redis at %s is not reachable (%s); answers ignore sessions until it is", self.url,
                      error)  # fmt: skip
        self._listener = asyncio.create_task(self._listen(), name="session-updates")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
        if self._client is not None:
            await self._client.aclose()

    async def _listen(self) -> None:
        """Mark the users other replicas collected events for; reconnect after a lost connection."""
        import redis.asyncio as redis

        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    now = time.time()
                    for user in message["data"].decode().split("\n"):
                        self._mark(user, now)
            except redis.RedisError as error:
                log.warning("sessions: lost the update channel (%s); retrying", error)
                await asyncio.sleep(1)

    def _mark(self, user: str, now: float) -> None:
        self.active.pop(user, None)
        self.active[user] = now
        while len(self.active) > self.max_users:
            self.active.popitem(last=False)

    def key(self, user: str) -> str:
        return f"{self.prefix}u:{user}"

    async def record(self, lines: list[bytes]) -> None:
        events = session_events(lines)
        ttl = max(1, int(np.ceil(self.ttl_seconds)))
        pipe = self._client.pipeline(transaction=False)
        users = dict.fromkeys(user for user, _ in events)
        for user, event in events:
            pipe.lpush(self.key(user), orjson.dumps(event))
        for user in users:
            pipe.ltrim(self.key(user), 0, self.max_events - 1)
            pipe.expire(self.key(user), ttl)
        pipe.publish(self.channel, "\n".join(users))
        await pipe.execute()
        now = time.time()
        for user in users:
            self._mark(user, now)

    async def add(self, events: list[tuple[str, SessionEvent]], now: float) -> None:
        """Events as ``record`` stores them (for scripts and tests that hold them parsed)."""
        await self.record([orjson.dumps({"user_id": u, "item_id": e[1], "event_type": e[2],
                                         "event_ts": _stamp(e[0])}) for u, e in events])  # fmt: skip

    async def recent(self, user: str, now: float) -> list[SessionEvent]:
        import redis.asyncio as redis

        try:
            raw = await self._client.lrange(self.key(user), 0, -1)
        except redis.RedisError as error:
            log.warning("sessions: Redis read failed (%s); answering without the session", error)
            return []
        fresh = [tuple(event) for event in map(orjson.loads, raw) if now - event[0] <= self.ttl_seconds]
        if not fresh:
            self.active.pop(user, None)
        return sorted(fresh, key=lambda e: -e[0])


def _stamp(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def open_sessions(settings: ServingSettings) -> MemorySessions | RedisSessions:
    """The store the collector's backend implies: in Redis when events go to Redis, else in this process."""
    bounds = (settings.session_max_events, settings.session_ttl_seconds, settings.session_max_users)
    if settings.collector_backend == "redis":
        return RedisSessions(settings.collector_redis_url, settings.session_redis_prefix, *bounds)
    return MemorySessions(*bounds)


def blend(
    publication,
    position: int | None,
    events: list[SessionEvent],
    now: float,
    k: int,
    blocked: np.ndarray | None,
    excluded: np.ndarray | None,
    weight: float,
    half_life_seconds: float,
    anchor_items: int,
) -> tuple[list[int], list[float], list[str]]:
    """(item rows, scores, reasons) of a session-aware top-k; the scoring is the module docstring's."""
    rows_of = publication.item_rows
    skipped = set(excluded.tolist()) if excluded is not None else set()
    skipped.update(rows_of[item] for _, item, kind in events if kind == PURCHASE and item in rows_of)
    anchors: dict[int, float] = {}  # newest first: row -> decay
    for instant, item, _ in events:
        row = rows_of.get(item)
        if row is not None and row not in anchors:
            anchors[row] = 0.5 ** (max(now - instant, 0.0) / half_life_seconds)
            if len(anchors) == anchor_items:
                break

    # item row -> [list term, session term, reason]
    candidates: dict[int, list] = {}
    if position is not None:
        start, end = int(publication.offsets[position]), int(publication.offsets[position + 1])
        scores = publication.rec_scores[start:end]
        low, span = (float(scores.min()), float(np.ptp(scores))) if end > start else (0.0, 0.0)
        names = publication.reason_names
        for row, score, code in zip(
            publication.rec_items[start:end].tolist(), scores.tolist(), publication.rec_reasons[start:end].tolist(),
            strict=True,
        ):  # fmt: skip
            candidates[row] = [(1 - weight) * ((score - low) / span if span > 0 else 1.0), 0.0, names[code]]
    if anchors:
        extra = len(skipped) + (0 if blocked is None else int(blocked.sum())) + len(anchors)
        item_ids = publication.item_ids
        # Beyond the first `new_depth` neighbours of an anchor, an item outside the list cannot reach the
        # top k (that many items already have more pull), so deeper ones only add pull to list items.
        new_depth = k + extra + 1
        near = neighbours_of(publication, list(anchors), new_depth)
        for anchor, (found, similar) in zip(anchors, near, strict=True):
            decay = weight * anchors[anchor]
            reason = "session:" + item_ids[anchor]
            for depth, (row, similarity) in enumerate(zip(found, similar, strict=True)):
                if row < 0 or row == anchor or similarity <= 0:
                    continue
                pull = decay * similarity
                entry = candidates.get(row)
                if entry is None:
                    if depth < new_depth:
                        candidates[row] = [0.0, pull, reason]
                elif pull > entry[1]:
                    entry[1] = pull
                    if pull > entry[0]:
                        entry[2] = reason
    ranked = heapq.nlargest(
        k,
        (
            (entry[0] + entry[1], row, entry[2])
            for row, entry in candidates.items()
            if row not in skipped and (blocked is None or not blocked[row])
        ),
        key=itemgetter(0),
    )
    rows = [row for _, row, _ in ranked]
    if position is None and len(rows) < k:  # a new visitor: the popular list fills the rest
        taken = set(rows)
        for row, score in zip(publication.fallback_items.tolist(), publication.fallback_scores.tolist(), strict=True):
            if len(ranked) == k:
                break
            if row in taken or row in skipped or (blocked is not None and blocked[row]):
                continue
            ranked.append((score, row, "popular"))
            taken.add(row)
        rows = [row for _, row, _ in ranked]
    return rows, [score for score, _, _ in ranked], [reason for _, _, reason in ranked]


NEIGHBOUR_CACHE_ITEMS = 20_000  # per publication: at top_n + 1 = 101 neighbours, about 16 MB at most


def neighbours_of(publication, rows: list[int], depth: int) -> list[tuple[list[int], list[float]]]:
    """(neighbour rows, similarities) of each item row, at least `depth` deep, best first.

    A FAISS search costs about half a millisecond on a 20k-item flat index, most of a session answer;
    sessions revolve around the items being browsed, so each publication keeps the neighbours of the
    last NEIGHBOUR_CACHE_ITEMS items it searched (``top_n + 1`` deep, the usual need). Deeper asks
    (many exclusions or blocked items) search directly.
    """
    cached_depth = min(publication.top_n + 1, publication.index.ntotal)
    cache: OrderedDict = publication.__dict__.setdefault("_session_neighbours", OrderedDict())
    if depth > cached_depth:
        depth = min(depth, publication.index.ntotal)
        vectors = np.vstack([publication.index.reconstruct(row) for row in rows])
        similarities, found = publication.index.search(vectors, depth)
        return list(zip(found.tolist(), similarities.tolist(), strict=True))
    missing = [row for row in rows if row not in cache]
    if missing:
        vectors = np.vstack([publication.index.reconstruct(row) for row in missing])
        similarities, found = publication.index.search(vectors, cached_depth)
        for row, near, similar in zip(missing, found.tolist(), similarities.tolist(), strict=True):
            cache[row] = (near, similar)
    for row in rows:
        cache.move_to_end(row)
    answer = [cache[row] for row in rows]
    while len(cache) > NEIGHBOUR_CACHE_ITEMS:
        cache.popitem(last=False)
    return answer


async def session_answer(request, sessions, request_id: bytes, publication=None, arm=None) -> bytes | None:
    """The answer for a user with session state, or None when none of it is fresh (the usual path then answers).

    `publication` is the one that answers (None: the live one; an experiment's variant's for its users, whose
    `arm` then names experiment and variant in the impression; the caller adds them to the answer).
    A user forgotten since the publication was made never gets a personal answer (the usual path gives the
    fallback); the slate shown goes to the impression log like any other answer.
    """
    state = request.app.state
    user_id = checked_id("user_id", request.path_params["user_id"])
    store = state.store
    publication = live_publication(store) if publication is None else publication
    k = checked_k(request, publication)
    if store.denies(user_id):
        return None
    now = time.time()
    events = await sessions.recent(user_id, now)
    position = publication.user_position(user_id)
    if not events or (position is None and not any(item in publication.item_rows for _, item, _ in events)):
        return None  # nothing fresh, or a visitor whose session names no published item: the usual answer
    blocked, excluded = filters(publication, store, excluded_ids(request))
    settings = state.session_settings
    rows, scores, reasons = blend(
        publication, position, events, now, k, blocked, excluded,
        settings.session_weight, settings.session_half_life_seconds, settings.session_anchor_items,
    )  # fmt: skip
    sessions.answers += 1
    impressions = state.impressions
    if impressions is not None:
        impressions.slate(
            request_id, RECOMMENDATIONS, user_id, publication,
            np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float32), False,
            *((arm.experiment, arm.variant) if arm is not None else ()),
        )  # fmt: skip
    return publication.answer_with_reasons(user_id, request_id, rows, scores, reasons)
