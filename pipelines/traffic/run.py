"""Simulated days of visits: each visiting user asks a policy (the live server, or one computed here)
for a slate, reacts to it (shoppers.py), and the reactions become events in a landing file.

Time: the server stamps each slate it logs with its own clock, and an outcome counts for a shown item
only when it happens after that answer and within the attribution window (marts.slate_items). So a
simulated "day" here is a round of visits (each user visits Poisson(activity x ``traffic_visit_rate``)
times, the simulated log's per-day activity), not a calendar day: the events are stamped with the
time the answer came back plus a few seconds of dwell, and a user's events are kept at least a second
apart (ingest quarantines the same user, item and type within a second as a client retry).

Every event is an ordinary landing event (the contract of serving/events.py) carrying the answer's
``request_id`` in ``context``; its ``event_id`` is ``<request_id>.<position>.<event_type>``, unique
because request ids are. The events of one run go to one file per landing day,
``landing/events/date=YYYY-MM-DD/traffic-<run start>-seed<seed>.jsonl``, beside whatever else landed
that day (ingest reads every file of a landing day, one batch each). The choices (who visits, what
they click and buy) are a function of ``traffic_seed`` and the answers: two runs against the same
answers make the same choices.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from pipelines.settings import Settings
from pipelines.simulate import DEVICES, LOCALES, landing_file_for, simulated_world
from pipelines.traffic.policies import Policy
from pipelines.traffic.shoppers import CLICK, PURCHASE, Shoppers
from serving.events import OUTCOME_REQUEST_ID

TRAFFIC_FILE_PREFIX = "traffic-"  # the landing files of this simulator (recforge run's backfill leaves such days out)
DWELL_SECONDS = 4.0  # mean time from an answer (or the previous step) to the next step
MIN_GAP = timedelta(seconds=1, milliseconds=1)  # between two events of one user: never a "retry"


@dataclass
class ShownItems:
    """One row per shown item: what the IPS check and the tests read (numpy arrays once finished)."""

    user: list = field(default_factory=list)
    request_id: list = field(default_factory=list)
    position: list = field(default_factory=list)
    item: list = field(default_factory=list)
    propensity: list = field(default_factory=list)  # nan when the policy logs none here (the server)
    clicked: list = field(default_factory=list)
    variant: list = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "user": np.asarray(self.user, dtype=np.int64),
            "request_id": np.asarray(self.request_id, dtype=object),
            "position": np.asarray(self.position, dtype=np.int64),
            "item": np.asarray(self.item, dtype=object),
            "propensity": np.asarray(self.propensity, dtype=float),
            "clicked": np.asarray(self.clicked, dtype=float),
            "variant": np.asarray(self.variant, dtype=object),
        }


@dataclass
class TrafficRun:
    seed: int
    days: int
    requests: int = 0
    impressions: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    unknown_items: int = 0  # shown items the simulated catalog does not hold (never clicked)
    requests_by_variant: dict[str, int] = field(default_factory=dict)  # "none": outside any experiment
    clicks_by_variant: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    shown: ShownItems = field(default_factory=ShownItems)

    def summary(self) -> str:
        variants = ", ".join(
            f"{v} {n} requests / {self.clicks_by_variant.get(v, 0)} clicks"
            for v, n in sorted(self.requests_by_variant.items())
        )
        events = ", ".join(f"{n} {t}" for t, n in sorted(self.events_by_type.items())) or "no events"
        unknown = f"; {self.unknown_items} shown items not in the simulated catalog" if self.unknown_items else ""
        return (
            f"simulated {self.days} day(s) of traffic (seed {self.seed}): {self.requests} requests, "
            f"{self.impressions} shown items, {events} ({variants}){unknown} -> {len(self.files)} landing file(s)"
        )


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def simulate_traffic(
    settings: Settings,
    policy: Policy,
    *,
    write: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TrafficRun:
    """``traffic_days`` rounds of visits against ``policy``; the events go to landing files unless
    ``write`` is off (the off-policy check only needs the shown items)."""
    world = simulated_world(settings)
    shoppers = Shoppers(world, settings)
    rng = np.random.default_rng(settings.traffic_seed)
    run = TrafficRun(seed=settings.traffic_seed, days=settings.traffic_days)
    started = clock()
    events: list[dict] = []
    last_event: dict[int, datetime] = {}
    by_type: Counter[str] = Counter()
    for day in range(settings.traffic_days):
        visits = rng.poisson(world.user_activity * settings.traffic_visit_rate)
        order = np.repeat(np.arange(len(visits)), visits)
        rng.shuffle(order)
        for u in order.tolist():
            slate = policy.slate(shoppers.user_id(u), settings.traffic_k)
            answered = clock()
            rows = shoppers.item_rows(slate.items)
            # The simulated log's tastes as they stand after its last day (a taste shift included).
            reactions = shoppers.react(rng, u, rows, day=world.days + day)
            _record(run, slate, u, rows, reactions)
            ts = answered
            for reaction in reactions:
                ts = max(ts + timedelta(seconds=float(rng.exponential(DWELL_SECONDS))), last_event.get(u, ts) + MIN_GAP)
                last_event[u] = ts
                by_type[reaction.event_type] += 1
                events.append(_event(world, u, slate.request_id, slate.items[reaction.position - 1], reaction, ts))
    run.events_by_type = dict(sorted(by_type.items()))
    if write and events:
        run.files = _write_events(settings.landing_dir, events, started, settings.traffic_seed)
    return run


def simulate_server_traffic(settings: Settings) -> TrafficRun:
    """``simulate_traffic`` against the live server: over HTTP at ``traffic_base_url``, or serving's app
    in-process on this home's publications (stopped at the end, so its impression files are sealed)."""
    from pipelines.traffic.policies import http_server, in_process_server

    if settings.traffic_base_url is not None:
        server = http_server(settings.traffic_base_url, settings.traffic_timeout_seconds)
    else:
        server = in_process_server(settings)
    with server as policy:
        return simulate_traffic(settings, policy)


def _record(run: TrafficRun, slate, u: int, rows: np.ndarray, reactions) -> None:
    variant = slate.variant if slate.variant is not None else "none"
    clicked_at = {r.position for r in reactions if r.event_type == CLICK}
    run.requests += 1
    run.impressions += len(slate.items)
    run.unknown_items += int((rows < 0).sum())
    run.requests_by_variant[variant] = run.requests_by_variant.get(variant, 0) + 1
    run.clicks_by_variant[variant] = run.clicks_by_variant.get(variant, 0) + len(clicked_at)
    shown = run.shown
    for position, item in enumerate(slate.items, start=1):
        shown.user.append(u)
        shown.request_id.append(slate.request_id)
        shown.position.append(position)
        shown.item.append(item)
        shown.propensity.append(slate.propensities[position - 1] if slate.propensities else float("nan"))
        shown.clicked.append(1.0 if position in clicked_at else 0.0)
        shown.variant.append(variant)


def _event(world, u: int, request_id: str, item_id: str, reaction, ts: datetime) -> dict:
    return {
        "event_id": f"{request_id}.{reaction.position}.{reaction.event_type}",
        "user_id": world.user_id(u),
        "item_id": item_id,
        "event_type": reaction.event_type,
        "event_ts": _iso(ts),
        "value": reaction.value if reaction.event_type != CLICK else None,
        "session_id": f"traffic-{request_id}",
        "context": {
            OUTCOME_REQUEST_ID: request_id,
            "device": DEVICES[world.user_device[u]],
            "locale": LOCALES[world.user_locale[u]],
            "position": reaction.position,
        },
    }


def _write_events(landing_dir: Path, events: list[dict], started: datetime, seed: int) -> list[str]:
    """One JSON-lines file per landing day of the events, written whole (a reader never sees half)."""
    by_day: dict[str, list[dict]] = {}
    for event in sorted(events, key=lambda e: e["event_ts"]):
        by_day.setdefault(event["event_ts"][:10], []).append(event)
    files = []
    for day, day_events in sorted(by_day.items()):
        folder = landing_file_for(landing_dir, datetime.fromisoformat(day)).parent
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TRAFFIC_FILE_PREFIX}{started:%Y%m%dT%H%M%S%f}-seed{seed}.jsonl"
        partial = folder / f".{path.name}.partial"
        partial.write_text("".join(json.dumps(e) + "\n" for e in day_events))
        os.replace(partial, path)
        files.append(str(path.relative_to(landing_dir)))
    return files


__all__ = ["PURCHASE", "TRAFFIC_FILE_PREFIX", "ShownItems", "TrafficRun", "simulate_server_traffic", "simulate_traffic"]
