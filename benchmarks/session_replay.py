"""Offline proof of session-aware answers: the simulated log's test days replayed in time order.

    python benchmarks/session_replay.py --home /tmp/rf-session --fresh --out benchmarks/results/session_replay.json

A model is trained on the events before the test window (the same global-time cut-off as the
promotion gate: ``test_days`` at the end of ``marts.interaction_events``) and its top-N lists, its
item index (FAISS, the publication's ``build_index``) and a popularity fallback stand in for the
publication. The test events are then replayed in time order through serving's own session store
(``MemorySessions``, the embedded default) and scoring (``serving.session.blend``): before each test
event of a user, the answer the user would get is scored against what the user goes on to touch in
the rest of the test window (items seen in training excluded, as evaluation does). Two answers per
request: the batch list alone (or the popular list for a visitor the lists do not know) and the
session-aware one (identical when the user has no fresh session event). Reported: NDCG@10 and
Recall@50 (``models.metrics``), overall, for new visitors (no training history) and for requests
with a fresh session; a request is a test event, so active users weigh more, as in production.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.base import algorithm  # noqa: E402
from models.lists.ranked import item_vectors  # noqa: E402
from models.metrics import ndcg_at_k, recall_at_k  # noqa: E402
from pipelines.publication.item_index import build_index  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.training.data import read_catalog, read_event_log  # noqa: E402
from pipelines.warehouse.connection import read_frame  # noqa: E402
from serving.config import ServingSettings  # noqa: E402
from serving.session import MemorySessions, blend  # noqa: E402

SECONDS_PER_DAY = 86_400
NDCG_K, RECALL_K = 10, 50
SIZES = {"sim_users": 3000, "sim_items": 800, "sim_days": 21, "test_days": 3, "valid_days": 3}


class ReplayLists:
    """The attributes of serving.publication.Publication that ``blend`` reads, built from a fitted model."""

    def __init__(self, model, top_n: int, popularity: np.ndarray):
        self.top_n = top_n
        self.item_ids = [str(i) for i in model.item_ids]
        self.item_rows = {item: row for row, item in enumerate(self.item_ids)}
        users = np.arange(len(model.user_ids))
        items, scores = model.recommend(users, top_n)
        valid = items >= 0
        self.offsets = np.append(0, np.cumsum(valid.sum(axis=1))).astype(np.int64)
        self.rec_items = items[valid].astype(np.int32)
        self.rec_scores = scores[valid].astype(np.float32)
        self.reason_names = [model.name]
        self.rec_reasons = np.zeros(len(self.rec_items), dtype=np.uint8)
        self.positions = {str(user): n for n, user in enumerate(model.user_ids)}
        self.index = build_index(item_vectors(model), {"type": "flat"})
        order = np.argsort(-popularity, kind="stable")[:top_n]
        self.fallback_items, self.fallback_scores = order.astype(np.int32), popularity[order].astype(np.float32)

    def user_position(self, user: str) -> int | None:
        return self.positions.get(user)

    def batch(self, position: int | None, k: int) -> list[int]:
        if position is None:
            return self.fallback_items[:k].tolist()
        start = int(self.offsets[position])
        return self.rec_items[start : min(int(self.offsets[position + 1]), start + k)].tolist()


def prepare_home(args) -> Settings:
    settings = Settings(home=args.home, **SIZES)
    settings.ensure_dirs()
    if args.fresh:
        from pipelines.ingest import ingest_interval
        from pipelines.simulate import simulate
        from pipelines.warehouse.transform import build_warehouse

        print("simulating, ingesting and transforming", flush=True)
        simulate(settings)
        start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC)
        ingest_interval(settings, start, start + timedelta(days=settings.sim_days))
        build_warehouse(settings)
    return settings


def scores_of(answers: list[list[int]], relevant: list[set[int]]) -> dict:
    depth = max(NDCG_K, RECALL_K)
    hits = np.zeros((len(answers), depth), dtype=bool)
    for n, (answer, wanted) in enumerate(zip(answers, relevant, strict=True)):
        hits[n, : len(answer[:depth])] = [row in wanted for row in answer[:depth]]
    n_relevant = np.array([len(w) for w in relevant])
    if not answers:
        return {f"ndcg_at_{NDCG_K}": None, f"recall_at_{RECALL_K}": None}
    return {
        f"ndcg_at_{NDCG_K}": round(float(ndcg_at_k(hits, n_relevant, NDCG_K).mean()), 4),
        f"recall_at_{RECALL_K}": round(float(recall_at_k(hits, n_relevant, RECALL_K).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--fresh", action="store_true", help=f"simulate, ingest and transform first ({SIZES})")
    parser.add_argument("--model", default="als", help="the algorithm whose lists stand in for the publication")
    parser.add_argument("--max-requests", type=int, default=40_000, help="score every n-th request beyond this")
    parser.add_argument("--weight", type=float, help="session weight (default: the server's setting)")
    parser.add_argument("--half-life", type=float, help="half-life in seconds (default: the server's setting)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    settings = prepare_home(args)
    serving = ServingSettings(
        **{k: v for k, v in {"session_weight": args.weight, "session_half_life_seconds": args.half_life}.items() if v}
    )
    weight, half_life = serving.session_weight, serving.session_half_life_seconds

    event_log = read_event_log(settings, read_catalog(settings))
    cutoff = event_log.end - settings.test_days * SECONDS_PER_DAY
    train, _, _ = event_log.interactions(event_log.ts < cutoff, cutoff)
    model = algorithm(args.model)(random_state=settings.train_random_state).fit(train)
    popularity = np.asarray(train.matrix.sum(axis=0)).ravel()
    lists = ReplayLists(model, RECALL_K, popularity)
    print(f"{args.model} fitted on {train.matrix.nnz} pairs before the cut-off; replaying the test days", flush=True)

    events = read_frame(
        settings,
        "select user_id, item_id, event_type, epoch(event_ts) as ts from marts.interaction_events "
        f"where epoch(event_ts) >= {int(cutoff)} order by event_ts, event_id",
    )
    seen = {str(u): set() for u in train.user_ids}
    rows, cols = train.matrix.nonzero()
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        seen[str(train.user_ids[row])].add(col)
    users = events["user_id"].astype(str).tolist()
    items = events["item_id"].astype(str).tolist()
    kinds, stamps = events["event_type"].tolist(), events["ts"].astype(float).tolist()
    # What each user goes on to touch from each of their test events on (known items, not seen in training).
    future: list[set[int]] = [set()] * len(users)
    ahead: dict[str, set[int]] = {}
    for n in range(len(users) - 1, -1, -1):
        row = lists.item_rows.get(items[n])
        wanted = set(ahead.get(users[n], ()))
        if row is not None and row not in seen.get(users[n], ()):
            wanted.add(row)
        ahead[users[n]] = future[n] = wanted
    stride = max(1, len(users) // args.max_requests)

    sessions = MemorySessions(serving.session_max_events, serving.session_ttl_seconds, serving.session_max_users)
    groups = {"overall": ([], [], []), "new visitors": ([], [], []), "with a fresh session": ([], [], [])}
    for n, user in enumerate(users):
        now = stamps[n]
        if n % stride == 0 and future[n]:
            position = lists.user_position(user)
            batch = lists.batch(position, RECALL_K)
            fresh = sessions.fresh(user, now) if user in sessions.active else []
            if fresh and (position is not None or any(item in lists.item_rows for _, item, _ in fresh)):
                session = blend(lists, position, fresh, now, RECALL_K, None, None, weight, half_life,
                                serving.session_anchor_items)[0]  # fmt: skip
            else:
                session = batch
            names = (
                ["overall"]
                + (["new visitors"] if position is None else [])
                + (["with a fresh session"] if fresh else [])
            )
            for name in names:
                groups[name][0].append(batch)
                groups[name][1].append(session)
                groups[name][2].append(future[n])
        sessions.add([(user, (now, items[n], kinds[n]))], now)
        if n and n % 10_000 == 0:
            print(f"  {n}/{len(users)} events replayed", flush=True)

    table = {}
    for name, (batch, session, relevant) in groups.items():
        table[name] = {
            "requests": len(relevant),
            "batch lists": scores_of(batch, relevant),
            "session-aware": scores_of(session, relevant),
        }
    result = {
        "model": args.model,
        "test_days": settings.test_days,
        "test_events": len(users),
        "scored_every_nth_event": stride,
        "session_weight": weight,
        "session_half_life_seconds": half_life,
        "session_ttl_seconds": serving.session_ttl_seconds,
        "session_anchor_items": serving.session_anchor_items,
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{'requests':>30} {'':8} {'NDCG@10':>16} {'Recall@50':>18}")
    for name, row in table.items():
        b, s = row["batch lists"], row["session-aware"]
        print(f"{name:>22} {row['requests']:>8}   batch {b['ndcg_at_10']} session {s['ndcg_at_10']}   "
              f"batch {b['recall_at_50']} session {s['recall_at_50']}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"replayed {len(users)} test events in {result['seconds']} s; table above")


if __name__ == "__main__":
    main()
