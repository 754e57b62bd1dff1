"""Realistic synthetic event log, so a new user needs no data set to try recforge.

Why these mechanics: a recommender can only beat popularity if users differ in a
learnable way. Users here have latent tastes over categories (Dirichlet, so most
users care about two or three) plus a small latent vector that prefers some items
within a category; items have power-law popularity. Sessions walk a funnel
view -> click -> add_to_cart -> purchase. New items and users appear over time. Each item's
title and description name its category's product and the traits of its latent vector, so a
content model can place an item nobody has touched yet (``models/content.py``).

The log is deliberately dirty in known amounts (exact duplicate events, malformed
rows of several kinds, bot users firing events faster than a human can) and the
truth is written to ``simulation.json`` so the later stages can be checked against it.
Everything is deterministic for a seed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from pipelines.settings import Settings
from serving.events import EVENT_TYPES

DEVICES = ("mobile", "desktop", "tablet")
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "pl-PL")
LATE_BY_DAYS = 2
MALFORMED_KINDS = ("missing_user_id", "unknown_event_type", "bad_timestamp", "future_timestamp", "not_json")
# Item text. A category is a kind of product (a noun) with a few words of its own; each latent
# dimension of an item is an opposed pair of adjectives, so a description names the traits that
# make users of one taste prefer the item within its category, as a real product text would.
CATEGORY_NOUNS = (
    "lamp", "kettle", "backpack", "sneaker", "headphone", "novel", "blender", "jacket", "watch", "tent",
    "guitar", "camera", "sofa", "helmet", "perfume", "puzzle", "bicycle", "monitor", "teapot", "scarf",
)  # fmt: skip
CATEGORY_WORDS = (
    "leather", "steel", "cotton", "wooden", "ceramic", "wireless", "waterproof", "handmade", "portable",
    "organic", "vintage", "foldable", "rechargeable", "insulated", "padded", "woven", "glass", "bamboo",
    "digital", "acoustic", "outdoor", "travel", "kitchen", "office", "garden", "studio", "winter", "summer",
)  # fmt: skip
TRAIT_WORDS = (
    ("bold", "subtle"), ("rugged", "delicate"), ("classic", "futuristic"), ("compact", "roomy"),
    ("bright", "muted"), ("sporty", "elegant"), ("playful", "serious"), ("light", "sturdy"),
)  # fmt: skip
FILLER_WORDS = ("great", "gift", "everyday", "quality", "popular", "choice", "design", "value", "new", "favourite")
TRAIT_THRESHOLD = 0.5
CONTEXTS_JSON = [
    json.dumps({"device": device, "locale": locale}) for device in DEVICES for locale in LOCALES
]  # a latent coordinate further than this from 0 is named in the text


@dataclass
class SimulationSummary:
    seed: int
    start_date: str
    days: int
    shift: str
    shift_day: int | None
    users: int
    items: int
    categories: int
    events_written: int = 0
    clean_events: int = 0
    duplicates_injected: int = 0
    retry_duplicates_injected: int = 0
    late_events: int = 0
    malformed_injected: dict[str, int] = field(default_factory=dict)
    bot_user_ids: list[str] = field(default_factory=list)
    bot_events: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def landing_file_for(landing_dir: Path, day: datetime) -> Path:
    """The landing file of one day: the unit the ingest DAG's data interval selects."""
    return landing_dir / "events" / f"date={day:%Y-%m-%d}" / "events.jsonl"


def catalog_file(landing_dir: Path) -> Path:
    return landing_dir / "catalog" / "items.jsonl"


class _World:
    """Users, items and their affinities, drawn once from the seed."""

    def __init__(self, settings: Settings, rng: np.random.Generator):
        n_users, n_items, n_cat = settings.sim_users, settings.sim_items, settings.sim_categories
        self.start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC)
        self.start_ms = int(self.start.timestamp() * 1000)
        self.days = settings.sim_days
        self.category_names = [f"cat_{c:02d}" for c in range(n_cat)]

        category_share = rng.dirichlet(np.full(n_cat, 2.0))
        self.item_category = rng.choice(n_cat, size=n_items, p=category_share)
        # Power-law popularity: a Zipf-like weight by a random popularity rank.
        ranks = rng.permutation(n_items) + 1
        self.item_popularity = 1.0 / ranks**0.9
        category_price = rng.uniform(8, 120, size=n_cat)
        self.item_price = np.round(category_price[self.item_category] * rng.lognormal(0, 0.35, n_items), 2)
        self.item_in_stock = rng.random(n_items) > 0.05
        self.item_blocked = rng.random(n_items) < 0.01
        # 85% of the catalog exists before the log starts; the rest arrives during it.
        arrives_later = rng.random(n_items) < 0.15
        self.item_created_day = np.where(arrives_later, rng.integers(1, max(self.days, 2), n_items), -30)

        self.user_taste = rng.dirichlet(np.full(n_cat, 0.15), size=n_users)
        self.user_activity = rng.lognormal(np.log(0.35), 0.8, size=n_users)
        joins_later = rng.random(n_users) < 0.2
        self.user_join_day = np.where(joins_later, rng.integers(1, max(self.days, 2), n_users), 0)
        self.user_device = rng.choice(len(DEVICES), size=n_users, p=[0.6, 0.3, 0.1])
        self.user_locale = rng.choice(len(LOCALES), size=n_users)

        latent_dim = 4
        user_vec = rng.normal(0, 1, (n_users, latent_dim))
        item_vec = rng.normal(0, 1, (n_items, latent_dim))
        # Affinities are computed per user when needed: a dense users x items matrix would need
        # 16 GB for 100k users x 20k items (the 10M-event benchmark).
        self.user_vec, self.item_vec = user_vec, item_vec
        self.shift_day = settings.sim_shift_day if settings.sim_shift != "none" else None
        self.shifted_taste = None
        # Shifts draw from their own stream, so a log without a shift is unchanged by this option.
        shift_rng = np.random.default_rng(settings.sim_seed + 1)
        if settings.sim_shift == "taste":
            self.shifted_taste = shift_rng.dirichlet(np.full(n_cat, 0.15), size=n_users)
        elif settings.sim_shift == "new_items":
            self._add_item_wave(shift_rng, n_cat, latent_dim)
        self.items_by_category = [np.flatnonzero(self.item_category == c) for c in range(n_cat)]
        # Sellers (for the bias audit's exposure by seller): one per 20 items, shares Zipf-like so a
        # few sellers hold much of the catalog. Their own stream, so the events are unchanged by them.
        seller_rng = np.random.default_rng([settings.sim_seed, 2])
        n_sellers = max(1, len(self.item_category) // 20)
        seller_share = 1.0 / np.arange(1, n_sellers + 1) ** 0.8
        seller_share /= seller_share.sum()
        self.item_seller = seller_rng.choice(n_sellers, size=len(self.item_category), p=seller_share)
        # Text draws from a third stream: adding it left the event log of every seed unchanged.
        self.text_rng = np.random.default_rng(settings.sim_seed + 2)
        self.category_noun, self.category_words = self._category_vocabulary(n_cat)

    def _category_vocabulary(self, n_cat: int) -> tuple[list[str], list[list[str]]]:
        """A product noun and three words of its own per category (past the noun list, nouns get a number)."""
        nouns = [
            CATEGORY_NOUNS[c % len(CATEGORY_NOUNS)] + ("" if c < len(CATEGORY_NOUNS) else str(c // len(CATEGORY_NOUNS)))
            for c in range(n_cat)
        ]
        words = [list(self.text_rng.choice(CATEGORY_WORDS, size=3, replace=False)) for _ in range(n_cat)]
        return nouns, words

    def item_text(self, i: int) -> tuple[str, str]:
        """(title, description) of item i: its category's noun and words, the traits of its latent vector.

        Only a latent coordinate far from 0 is named, so the text tells part of what users like about
        an item, never all of it; two filler words add the noise real product copy has.
        """
        category = int(self.item_category[i])
        traits = [
            TRAIT_WORDS[d % len(TRAIT_WORDS)][0 if value > 0 else 1]
            for d, value in enumerate(self.item_vec[i])
            if abs(value) > TRAIT_THRESHOLD
        ]
        noun, words = self.category_noun[category], self.category_words[category]
        fillers = list(self.text_rng.choice(FILLER_WORDS, size=2, replace=False))
        lead = traits[0].capitalize() if traits else "Everyday"
        title = f"{lead} {noun} {i}"
        description = (
            f"A {' and '.join(traits) if traits else 'plain'} {noun} from the {self.category_names[category]} range: "
            f"{words[0]}, {words[1]} and {words[2]}. Shoppers call it {fillers[0]} and {fillers[1]}."
        )
        return title, description

    def _add_item_wave(self, rng: np.random.Generator, n_cat: int, latent_dim: int) -> None:
        """A launch: a quarter more items appear on the shift day, and they are popular at once."""
        n_wave = max(10, len(self.item_category) // 4)
        self.item_category = np.concatenate([self.item_category, rng.integers(0, n_cat, n_wave)])
        boosted = 3.0 / (np.arange(n_wave) + 1) ** 0.5
        self.item_popularity = np.concatenate([self.item_popularity, boosted])
        self.item_price = np.concatenate([self.item_price, np.round(rng.uniform(8, 120, n_wave), 2)])
        self.item_in_stock = np.concatenate([self.item_in_stock, np.ones(n_wave, dtype=bool)])
        self.item_blocked = np.concatenate([self.item_blocked, np.zeros(n_wave, dtype=bool)])
        self.item_created_day = np.concatenate([self.item_created_day, np.full(n_wave, self.shift_day)])
        wave_vec = rng.normal(0, 1, (n_wave, latent_dim))
        self.item_vec = np.vstack([self.item_vec, wave_vec])

    def affinity(self, u: int, items: np.ndarray) -> np.ndarray:
        """How much user u likes each of `items` beyond popularity (log-normal around 1)."""
        return np.exp(0.9 * (self.item_vec[items] @ self.user_vec[u]) / np.sqrt(self.user_vec.shape[1]))

    def taste(self, u: int, day: int) -> np.ndarray:
        if self.shifted_taste is not None and day >= self.shift_day:
            return self.shifted_taste[u]
        return self.user_taste[u]

    def context_json(self, u: int) -> str:
        """The `context` of user u's events as its JSON text (device and locale)."""
        return CONTEXTS_JSON[int(self.user_device[u]) * len(LOCALES) + int(self.user_locale[u])]

    def user_id(self, u: int) -> str:
        return f"u{u:06d}"

    def item_id(self, i: int) -> str:
        return f"i{i:06d}"

    def catalog_rows(self) -> list[dict]:
        rows = []
        for i in range(len(self.item_category)):
            created = self.start + timedelta(days=int(self.item_created_day[i]))
            title, description = self.item_text(i)
            rows.append(
                {
                    "item_id": self.item_id(i),
                    "title": title,
                    "category": self.category_names[self.item_category[i]],
                    "price": float(self.item_price[i]),
                    "in_stock": bool(self.item_in_stock[i]),
                    "is_blocked": bool(self.item_blocked[i]),
                    "created_at": created.isoformat().replace("+00:00", "Z"),
                    # The description rides in attributes: the item contract's place for what a catalog adds.
                    "attributes": {
                        "brand": f"brand_{i % 37:02d}",
                        "description": description,
                        "seller": f"seller_{self.item_seller[i]:03d}",
                    },
                }
            )
        return rows


def simulated_world(settings: Settings) -> _World:
    """The users and items of the log ``simulate(settings)`` writes, drawn again from the same seed: the
    traffic simulator (pipelines/traffic/) gives the same people the same tastes when they meet the server."""
    return _World(settings, np.random.default_rng(settings.sim_seed))


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _session_events(world: _World, rng: np.random.Generator, u: int, day: int, seq: list[int]) -> list[dict]:
    """One browsing session of user ``u`` on ``day``: views, and the funnel steps some views lead to."""
    cat = rng.choice(len(world.category_names), p=world.taste(u, day))
    candidates = world.items_by_category[cat]
    candidates = candidates[world.item_created_day[candidates] <= day]
    if candidates.size == 0:
        return []
    liking = world.affinity(u, candidates)
    weights = world.item_popularity[candidates] * liking
    n_views = min(1 + rng.geometric(0.3), 15)
    viewed = rng.choice(candidates, size=n_views, p=weights / weights.sum())

    # Diurnal pattern: most sessions around lunch or the evening.
    hour = rng.choice([rng.normal(12.5, 2.0), rng.normal(20.5, 2.0)]) % 24
    ts = world.start + timedelta(days=day, seconds=float(hour * 3600))
    session_id = f"s{day:04d}-{u:06d}-{seq[0]:08d}"
    context = {"device": DEVICES[world.user_device[u]], "locale": LOCALES[world.user_locale[u]]}
    events: list[dict] = []

    def emit(item: int, event_type: str, value: float | None) -> None:
        nonlocal ts
        ts = ts + timedelta(seconds=float(rng.exponential(40.0)) + 1.0)
        seq[0] += 1
        events.append(
            {
                "event_id": f"ev{seq[0]:010d}",
                "user_id": world.user_id(u),
                "item_id": world.item_id(item),
                "event_type": event_type,
                "event_ts": _iso(ts),
                "value": value,
                "session_id": session_id,
                "context": context,
            }
        )

    affinity_rank = world.affinity(u, viewed) / liking.mean()
    for item, liking in zip(viewed, affinity_rank, strict=True):
        emit(item, "view", None)
        if rng.random() > min(0.15 + 0.2 * liking, 0.8):
            continue
        emit(item, "click", None)
        if rng.random() > 0.3:
            continue
        price = float(world.item_price[item])
        emit(item, "add_to_cart", price)
        if world.item_in_stock[item] and rng.random() < 0.5:
            emit(item, "purchase", price)
    # Events leave the day they started in only if the session ran past midnight: keep the day clean.
    day_end = world.start + timedelta(days=day + 1)
    return [e for e in events if e["event_ts"] < _iso(day_end)]


def _without_double_fires_in_order(events: list[dict]) -> list[dict]:
    """Drop an event that repeats the same user, item and type within a second (time-sorted input).

    Two overlapping sessions of one user can do that by chance; ingestion quarantines it as a
    retry_duplicate, so a clean log must not contain it, or the injected truth would not add up.
    """
    last_seen: dict[tuple[str, str, str], datetime] = {}
    kept = []
    for event in events:
        key = (event["user_id"], event["item_id"], event["event_type"])
        ts = datetime.fromisoformat(event["event_ts"].replace("Z", "+00:00"))
        previous = last_seen.get(key)
        last_seen[key] = ts
        if previous is not None and ts - previous < timedelta(seconds=1) and not event["session_id"].startswith("bot-"):
            continue
        kept.append(event)
    return kept


def _bot_burst(world: _World, rng: np.random.Generator, bot: int, day: int, seq: list[int]) -> list[dict]:
    """A scraper: hundreds of views in two minutes, far above any human rate."""
    start = world.start + timedelta(days=day, hours=float(rng.uniform(1, 22)))
    events = []
    for n in range(int(rng.integers(150, 250))):
        seq[0] += 1
        events.append(
            {
                "event_id": f"ev{seq[0]:010d}",
                "user_id": world.user_id(bot),
                "item_id": world.item_id(int(rng.integers(0, len(world.item_category)))),
                "event_type": "view",
                "event_ts": _iso(start + timedelta(milliseconds=500 * n)),
                "value": None,
                "session_id": f"bot-{day:04d}-{bot:06d}",
                "context": {"device": "desktop", "locale": "en-US", "user_agent": "python-requests"},
            }
        )
    return events


# The shopping funnel by code: the event contract's first four types, in order (a view's later steps are a
# prefix of it); the contract's `rating` is never simulated.
FUNNEL = EVENT_TYPES[:4]
MAX_VIEWS = 15  # views per session: min(1 + geometric(0.3), 15)
AFFINITY_CELLS = 4_000_000  # sessions x candidate items scored at once (32 MB per float64 matrix)
TASTE_ROWS = 200_000  # sessions whose category is drawn at once
LINES_PER_WRITE = 500_000
MS_PER_DAY = 86_400_000
BOT_CONTEXT = {"device": "desktop", "locale": "en-US", "user_agent": "python-requests"}
BOT_CONTEXT_JSON = json.dumps(BOT_CONTEXT)
# The columns of a day's events (numpy arrays of one length); a row is one event.
COLUMNS = ("user", "item", "etype", "ts", "value", "number", "session_day", "session_seq", "bot")


def _take(events: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: column[rows] for name, column in events.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([part[name] for part in parts]) for name in COLUMNS}


def _no_events() -> dict[str, np.ndarray]:
    types = {"value": np.float64, "bot": bool}
    return {name: np.zeros(0, dtype=types.get(name, np.int64)) for name in COLUMNS}


def _choose_categories(world: _World, rng: np.random.Generator, users: np.ndarray, day: int) -> np.ndarray:
    """One category per session, drawn from its user's taste that day (inverse CDF, in blocks of sessions)."""
    taste = world.shifted_taste if world.shifted_taste is not None and day >= world.shift_day else world.user_taste
    draws = rng.random(len(users))
    chosen = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), TASTE_ROWS):
        block = slice(start, start + TASTE_ROWS)
        cumulative = np.cumsum(taste[users[block]], axis=1)
        below = cumulative < (draws[block] * cumulative[:, -1])[:, None]
        chosen[block] = np.minimum(below.sum(axis=1), taste.shape[1] - 1)
    return chosen


def _views(world: _World, rng: np.random.Generator, users: np.ndarray, categories: np.ndarray, day: int):
    """Each session's viewed items (-1 past its views) and how much its user likes each against the category.

    Per category, the items that exist that day are weighted by popularity x the user's affinity and
    drawn with replacement (inverse CDF over each session's cumulative weights: one searchsorted for a
    whole block of sessions); a block holds at most AFFINITY_CELLS session x item scores, so memory
    never grows with users x items.
    """
    n_views = np.minimum(1 + rng.geometric(0.3, len(users)), MAX_VIEWS)
    draws = rng.random((len(users), MAX_VIEWS))
    viewed = np.full((len(users), MAX_VIEWS), -1, dtype=np.int64)
    liking = np.zeros((len(users), MAX_VIEWS))
    scale = 0.9 / np.sqrt(world.user_vec.shape[1])
    for category, items in enumerate(world.items_by_category):
        sessions = np.flatnonzero(categories == category)
        candidates = items[world.item_created_day[items] <= day]
        if sessions.size == 0 or candidates.size == 0:
            continue  # a session in a category with nothing yet in it has no events
        candidate_vec, popularity = world.item_vec[candidates], world.item_popularity[candidates]
        block_rows = max(1, AFFINITY_CELLS // candidates.size)
        for start in range(0, sessions.size, block_rows):
            rows = sessions[start : start + block_rows]
            affinity = np.exp(scale * (world.user_vec[users[rows]] @ candidate_vec.T))
            cumulative = np.cumsum(popularity * affinity, axis=1)
            cumulative /= cumulative[:, -1:]
            offsets = np.arange(len(rows))[:, None]
            picks = np.searchsorted((cumulative + offsets).ravel(), draws[rows] + offsets, side="right")
            picks = np.minimum(picks - offsets * candidates.size, candidates.size - 1)
            viewed[rows] = candidates[picks]
            liking[rows] = np.take_along_axis(affinity, picks, axis=1) / affinity.mean(axis=1, keepdims=True)
    viewed[np.arange(MAX_VIEWS)[None, :] >= n_views[:, None]] = -1
    return viewed, liking


def _human_events(world: _World, rng: np.random.Generator, humans: np.ndarray, day: int, first_number: int):
    """The sessions of every active human on `day`: views and the funnel steps they lead to, in session order.

    Event numbers (the ids' sequence) count from `first_number`; a session's number is the count before its
    first event. Events past midnight are dropped, as a session that ran over would leave the day.
    """
    active = humans[world.user_join_day[humans] <= day]
    users = np.repeat(active, rng.poisson(world.user_activity[active]))
    categories = _choose_categories(world, rng, users, day)
    viewed, liking = _views(world, rng, users, categories, day)
    pick_evening = rng.random(len(users)) < 0.5
    hours = np.where(pick_evening, rng.normal(20.5, 2.0, len(users)), rng.normal(12.5, 2.0, len(users))) % 24
    session_of_view, slot = np.nonzero(viewed >= 0)
    items, likes = viewed[session_of_view, slot], liking[session_of_view, slot]
    clicked = rng.random(len(items)) <= np.minimum(0.15 + 0.2 * likes, 0.8)
    carted = clicked & (rng.random(len(items)) <= 0.3)
    bought = carted & world.item_in_stock[items] & (rng.random(len(items)) < 0.5)
    steps = 1 + clicked.astype(np.int64) + carted + bought
    view_of_event = np.repeat(np.arange(len(items)), steps)
    first_of_view = np.cumsum(steps) - steps
    etype = np.arange(len(view_of_event)) - first_of_view[view_of_event]
    session = session_of_view[view_of_event]
    # Each event a gap after the one before it: exponential(40 s) + 1 s, from the session's start.
    elapsed = np.cumsum(rng.exponential(40.0, len(session)) + 1.0)
    opens_session = np.r_[True, session[1:] != session[:-1]][: len(session)]
    elapsed_before = np.concatenate(([0.0], elapsed))[:-1]  # the gaps of every earlier event, any session's
    base = np.zeros(len(users))
    base[session[opens_session]] = elapsed_before[opens_session]
    seconds = hours[session] * 3600 + elapsed - base[session]
    events_per_session = np.bincount(session, minlength=len(users))
    session_seq = first_number + np.cumsum(events_per_session) - events_per_session
    item = items[view_of_event]
    price = world.item_price[item]
    events = {
        "user": users[session],
        "item": item,
        "etype": etype,
        "ts": day * MS_PER_DAY + np.floor(seconds * 1000).astype(np.int64),
        "value": np.where(etype >= 2, price, np.nan),
        "number": first_number + 1 + np.arange(len(session)),
        "session_day": np.full(len(session), day, dtype=np.int64),
        "session_seq": session_seq[session],
        "bot": np.zeros(len(session), dtype=bool),
    }
    return _take(events, np.flatnonzero(seconds < 86_400)), first_number + len(session)


def _bot_events(world: _World, rng: np.random.Generator, bots: np.ndarray, day: int, first_number: int):
    """Scrapers: on about half the days each fires 150-250 views, 500 ms apart, at random items."""
    parts, number = [], first_number
    for bot in bots:
        if rng.random() >= 0.5:
            continue
        start = day * MS_PER_DAY + int(rng.uniform(1, 22) * 3_600_000)
        n = int(rng.integers(150, 250))
        items = rng.integers(0, len(world.item_category), n)
        parts.append({
            "user": np.full(n, bot, dtype=np.int64), "item": items.astype(np.int64), "etype": np.zeros(n, np.int64),
            "ts": start + 500 * np.arange(n, dtype=np.int64), "value": np.full(n, np.nan),
            "number": number + 1 + np.arange(n), "session_day": np.full(n, day, np.int64),
            "session_seq": np.full(n, -1, np.int64), "bot": np.ones(n, dtype=bool),
        })  # fmt: skip
        number += n
    return (_concat(parts) if parts else _no_events()), number


def _drop_double_fires(events: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    """Drop a human event that repeats the previous one of the same user, item and type within a second.

    Two overlapping sessions of one user can do that by chance; ingestion quarantines it as a
    retry_duplicate, so a clean log must not contain it, or the injected truth would not add up.
    `events` are in time order; the previous occurrence counts whether or not it was itself dropped.
    """
    key = (events["user"] * n_items + events["item"]) * len(FUNNEL) + events["etype"]
    order = np.argsort(key, kind="stable")  # by key, each key's events still in time order
    same_key = key[order][1:] == key[order][:-1]
    too_soon = np.diff(events["ts"][order]) < 1000
    drop = np.zeros(len(key), dtype=bool)
    drop[order[1:]] = same_key & too_soon
    return _take(events, np.flatnonzero(~(drop & ~events["bot"])))


def _format_lines(world: _World, events: dict[str, np.ndarray], retry_numbers: np.ndarray | None = None) -> list[str]:
    """The landing lines of `events` (a retry: a new ``retry`` id and 300 ms later), as ``json.dumps`` writes them."""
    ts = events["ts"] + (300 if retry_numbers is not None else 0)
    stamps = np.datetime_as_string((world.start_ms + ts).astype("datetime64[ms]"), unit="ms")
    if retry_numbers is None:
        ids = [f"ev{n:010d}" for n in events["number"].tolist()]
    else:
        ids = [f"retry{n:010d}" for n in retry_numbers.tolist()]
    lines = []
    for event_id, user, item, etype, stamp, value, day, seq, bot in zip(
        ids, events["user"].tolist(), events["item"].tolist(), events["etype"].tolist(), stamps.tolist(),
        events["value"].tolist(), events["session_day"].tolist(), events["session_seq"].tolist(),
        events["bot"].tolist(), strict=True,
    ):  # fmt: skip
        if bot:
            session, context = f"bot-{day:04d}-{user:06d}", BOT_CONTEXT_JSON
        else:
            session, context = f"s{day:04d}-{user:06d}-{seq:08d}", world.context_json(user)
        lines.append(
            f'{{"event_id": "{event_id}", "user_id": "u{user:06d}", "item_id": "i{item:06d}", '
            f'"event_type": "{FUNNEL[etype]}", "event_ts": "{stamp}Z", '
            f'"value": {"null" if value != value else repr(value)}, "session_id": "{session}", "context": {context}}}'
        )
    return lines


def _as_dict(world: _World, events: dict[str, np.ndarray], row: int, event_id: str) -> dict:
    """One event as the dict its line encodes (for the malformed copies, which break it)."""
    user, bot = int(events["user"][row]), bool(events["bot"][row])
    day, seq, value = int(events["session_day"][row]), int(events["session_seq"][row]), float(events["value"][row])
    return {
        "event_id": event_id,
        "user_id": world.user_id(user),
        "item_id": world.item_id(int(events["item"][row])),
        "event_type": FUNNEL[int(events["etype"][row])],
        "event_ts": str(np.datetime64(world.start_ms + int(events["ts"][row]), "ms")) + "Z",
        "value": None if value != value else value,
        "session_id": f"bot-{day:04d}-{user:06d}" if bot else f"s{day:04d}-{user:06d}-{seq:08d}",
        "context": dict(BOT_CONTEXT) if bot else json.loads(world.context_json(user)),
    }


def _corrupt(event: dict, kind: str) -> str:
    """Turn a good event into a malformed landing line of the given kind."""
    bad = dict(event)
    if kind == "missing_user_id":
        bad.pop("user_id")
    elif kind == "unknown_event_type":
        bad["event_type"] = "hover"
    elif kind == "bad_timestamp":
        bad["event_ts"] = "yesterday at noon"
    elif kind == "future_timestamp":
        bad["event_ts"] = "2099-01-01T00:00:00.000Z"
    elif kind == "not_json":
        return json.dumps(bad)[: len(json.dumps(bad)) // 2]
    return json.dumps(bad)


def simulate(settings: Settings, out_dir: Path | None = None) -> SimulationSummary:
    """Write one landing file per day and the item catalog; return what was written and injected.

    Two engines draw the same mechanics (`sim_engine`): ``sessions``, the default, one session at a time in
    Python (the demo's and the tests' log); ``columns``, a day's sessions as numpy columns in blocks that
    bound memory, formatted into lines a chunk at a time: a million users and 50 million events in
    minutes. Their logs differ for a seed (they consume the random stream differently), not in kind.
    """
    out_dir = out_dir or settings.landing_dir
    rng = np.random.default_rng(settings.sim_seed)
    world = _World(settings, rng)
    summary = SimulationSummary(
        seed=settings.sim_seed,
        start_date=settings.sim_start_date.isoformat(),
        days=settings.sim_days,
        shift=settings.sim_shift,
        shift_day=world.shift_day,
        users=settings.sim_users,
        items=settings.sim_items,
        categories=settings.sim_categories,
    )
    humans = np.arange(settings.sim_users)
    bots = rng.choice(humans, size=min(settings.sim_bot_users, len(humans)), replace=False)
    summary.bot_user_ids = sorted(world.user_id(b) for b in bots)
    humans = np.setdiff1d(humans, bots)

    catalog_path = catalog_file(out_dir)
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    catalog_path.write_text("".join(json.dumps(r) + "\n" for r in world.catalog_rows()))

    engine = _day_columns if settings.sim_engine == "columns" else _day_sessions
    by_type, malformed = engine(settings, out_dir, rng, world, summary, humans, bots)
    summary.events_by_type = dict(sorted((k, v) for k, v in by_type.items() if v))
    summary.malformed_injected = dict(sorted(malformed.items()))
    (out_dir / "simulation.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def _day_sessions(settings, out_dir, rng, world, summary, humans, bots) -> tuple[Counter, Counter]:
    """The ``sessions`` engine: every day's sessions one at a time (see `simulate`)."""
    seq = [0]
    late_by_day: dict[int, list[dict]] = {}
    by_type: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    for day in range(settings.sim_days):
        day_events: list[dict] = []
        active = humans[world.user_join_day[humans] <= day]
        sessions = rng.poisson(world.user_activity[active])
        for u, n in zip(active, sessions, strict=True):
            for _ in range(n):
                day_events.extend(_session_events(world, rng, int(u), day, seq))
        for b in bots:
            if rng.random() < 0.5:
                burst = _bot_burst(world, rng, int(b), day, seq)
                day_events.extend(burst)
                summary.bot_events += len(burst)
        day_events.sort(key=lambda e: e["event_ts"])
        day_events = _without_double_fires_in_order(day_events)
        summary.clean_events += len(day_events)
        by_type.update(e["event_type"] for e in day_events)
        if day + LATE_BY_DAYS < settings.sim_days and settings.sim_late_share > 0:
            movable = [k for k, e in enumerate(day_events) if not e["session_id"].startswith("bot-")]
            n_late = int(round(len(movable) * settings.sim_late_share))
            moved = set(rng.choice(movable, size=n_late, replace=False).tolist()) if n_late else set()
            late_by_day[day + LATE_BY_DAYS] = [day_events[k] for k in sorted(moved)]
            day_events = [e for k, e in enumerate(day_events) if k not in moved]
            summary.late_events += len(moved)

        # Late arrivals: a few events of two days ago are delivered today, not on their own day.
        day_events.extend(late_by_day.pop(day, []))
        lines = [json.dumps(e) for e in day_events]
        # Exact re-deliveries of events already in today's file, appended at the end as a retrying
        # producer would. Only human events, so every injected defect has exactly one cause.
        human_idx = [k for k, e in enumerate(day_events) if not e["session_id"].startswith("bot-")]
        n_dup = int(round(len(human_idx) * settings.sim_duplicate_share))
        dup_idx = rng.choice(human_idx, size=n_dup, replace=False) if n_dup else []
        lines.extend(lines[k] for k in dup_idx)
        summary.duplicates_injected += n_dup
        # Client retries: the same action re-sent under a new event id a few hundred ms later.
        n_retry = int(round(len(human_idx) * settings.sim_retry_share))
        for k in rng.choice(human_idx, size=n_retry, replace=False) if n_retry else []:
            original = day_events[k]
            sent = datetime.fromisoformat(original["event_ts"].replace("Z", "+00:00"))
            retry = dict(original, event_id=f"retry{seq[0]:010d}", event_ts=_iso(sent + timedelta(milliseconds=300)))
            seq[0] += 1
            lines.append(json.dumps(retry))
        summary.retry_duplicates_injected += n_retry
        # Malformed rows are extra lines (copies of real events, then broken), so the clean log stays whole.
        n_bad = int(round(len(human_idx) * settings.sim_malformed_share))
        for k in rng.choice(human_idx, size=n_bad, replace=False) if n_bad else []:
            kind = MALFORMED_KINDS[int(rng.integers(0, len(MALFORMED_KINDS)))]
            source = dict(day_events[k], event_id=f"bad{seq[0]:010d}")
            seq[0] += 1
            lines.insert(int(rng.integers(0, len(lines) + 1)), _corrupt(source, kind))
            malformed[kind] += 1

        path = landing_file_for(out_dir, world.start + timedelta(days=day))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        summary.files.append(str(path.relative_to(out_dir)))
        summary.events_written += len(lines)

    return by_type, malformed


def _day_columns(settings, out_dir, rng, world, summary, humans, bots) -> tuple[Counter, Counter]:
    """The ``columns`` engine: every day's sessions as numpy columns (see `simulate`)."""
    number = 0  # the event-id sequence, across days
    late_by_day: dict[int, dict[str, np.ndarray]] = {}
    by_type: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    n_items = len(world.item_category)
    for day in range(settings.sim_days):
        human, number = _human_events(world, rng, humans, day, number)
        bot, number = _bot_events(world, rng, bots, day, number)
        summary.bot_events += len(bot["user"])
        events = _concat([human, bot])
        events = _take(events, np.argsort(events["ts"], kind="stable"))
        events = _drop_double_fires(events, n_items)
        summary.clean_events += len(events["user"])
        by_type.update(dict(zip(FUNNEL, np.bincount(events["etype"], minlength=len(FUNNEL)).tolist(),
                                strict=True)))  # fmt: skip
        if day + LATE_BY_DAYS < settings.sim_days and settings.sim_late_share > 0:
            movable = np.flatnonzero(~events["bot"])
            n_late = int(round(len(movable) * settings.sim_late_share))
            moved = np.sort(rng.choice(movable, size=n_late, replace=False)) if n_late else movable[:0]
            late_by_day[day + LATE_BY_DAYS] = _take(events, moved)
            kept = np.ones(len(events["user"]), dtype=bool)
            kept[moved] = False
            events = _take(events, np.flatnonzero(kept))
            summary.late_events += len(moved)
        # Late arrivals: a few events of two days ago are delivered today, not on their own day.
        if day in late_by_day:
            events = _concat([events, late_by_day.pop(day)])
        # Exact re-deliveries of events already in today's file, appended at the end as a retrying
        # producer would. Only human events, so every injected defect has exactly one cause.
        human_idx = np.flatnonzero(~events["bot"])
        n_dup = int(round(len(human_idx) * settings.sim_duplicate_share))
        dup_idx = rng.choice(human_idx, size=n_dup, replace=False) if n_dup else human_idx[:0]
        summary.duplicates_injected += n_dup
        # Client retries: the same action re-sent under a new event id 300 ms later.
        n_retry = int(round(len(human_idx) * settings.sim_retry_share))
        retry_idx = rng.choice(human_idx, size=n_retry, replace=False) if n_retry else human_idx[:0]
        retry_numbers = number + np.arange(n_retry)
        number += n_retry
        summary.retry_duplicates_injected += n_retry
        # Malformed rows are extra lines (copies of real events, then broken), so the clean log stays whole.
        n_bad = int(round(len(human_idx) * settings.sim_malformed_share))
        bad_lines = []
        for k in rng.choice(human_idx, size=n_bad, replace=False) if n_bad else []:
            kind = MALFORMED_KINDS[int(rng.integers(0, len(MALFORMED_KINDS)))]
            bad_lines.append(_corrupt(_as_dict(world, events, int(k), f"bad{number:010d}"), kind))
            number += 1
            malformed[kind] += 1
        n_base = len(events["user"]) + n_dup + n_retry
        bad_before = np.sort(rng.integers(0, n_base + 1, n_bad))  # each malformed line goes before this base line

        path = landing_file_for(out_dir, world.start + timedelta(days=day))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_day(path, world, events, dup_idx, retry_idx, retry_numbers, bad_lines, bad_before)
        summary.files.append(str(path.relative_to(out_dir)))
        summary.events_written += n_base + n_bad

    return by_type, malformed


def _write_day(path: Path, world: _World, events, dup_idx, retry_idx, retry_numbers, bad_lines, bad_before) -> None:
    """The day's file: its events, then the re-deliveries and the retries, with the malformed lines in between."""
    base_parts = [(events, None), (_take(events, dup_idx), None), (_take(events, retry_idx), retry_numbers)]
    written = 0  # base lines written so far
    bad = 0
    with path.open("w") as out:
        for part, numbers in base_parts:
            for start in range(0, len(part["user"]), LINES_PER_WRITE):
                rows = np.arange(start, min(start + LINES_PER_WRITE, len(part["user"])))
                chunk = _format_lines(world, _take(part, rows), None if numbers is None else numbers[rows])
                lines = []
                for line in chunk:
                    while bad < len(bad_lines) and bad_before[bad] <= written:
                        lines.append(bad_lines[bad])
                        bad += 1
                    lines.append(line)
                    written += 1
                out.write("\n".join(lines) + "\n")
        if bad < len(bad_lines):
            out.write("\n".join(bad_lines[bad:]) + "\n")
