"""How long evaluation takes on a simulated log of 6,000 users x 4,000 items.

Evaluation = for every test user of a fold: whole-catalog top-50 lists in both views (the model's raw
ranking, and the lists publication stores, by the same function: seen, blocked and out-of-stock
items out, cold-user popularity blend, category cap on the top 10, popularity fallback for unknown
users), then every metric overall, per activity segment and on new items. Model fitting is timed
separately: it is not evaluation.

The log comes from recforge's own simulator (no defects injected, so every line is a clean event),
read back from its landing files. Run:

    nice -n 10 .venv/bin/python benchmarks/evaluation_speed.py [--users 6000 --items 4000 --days 28]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import ALSRecommender, PopularityRecommender  # noqa: E402
from models.evaluation import (  # noqa: E402
    EvaluationConfig,
    EventLog,
    global_time_folds,
    random_ratio_folds,
    score_fold,
)
from pipelines.settings import Settings  # noqa: E402
from pipelines.simulate import simulate  # noqa: E402
from pipelines.training.data import item_features  # noqa: E402


def simulated_log(users: int, items: int, days: int, home: Path) -> tuple[EventLog, pd.DataFrame]:
    settings = Settings(
        home=home,
        sim_users=users,
        sim_items=items,
        sim_categories=20,
        sim_days=days,
        sim_duplicate_share=0.0,
        sim_malformed_share=0.0,
        sim_bot_users=0,
    )
    simulate(settings)
    frames = [pd.read_json(path, lines=True) for path in sorted((settings.landing_dir / "events").glob("*/*.jsonl"))]
    events = pd.concat(frames, ignore_index=True)
    catalog = pd.read_json(settings.landing_dir / "catalog" / "items.jsonl", lines=True)
    catalog["item_id"] = catalog["item_id"].astype(str)
    events["weight"] = events["event_type"].map(settings.signal_weights)
    log = EventLog.from_frame(events, settings.decay_half_life_days, item_features(catalog))
    return log, catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        log, catalog = simulated_log(args.users, args.items, args.days, Path(tmp))
        print(
            f"simulated {len(log):,} events, {len(log.user_ids):,} users x {len(log.item_ids):,} items "
            f"in {time.perf_counter() - started:.1f}s"
        )
    started = time.perf_counter()
    folds = global_time_folds(log, 3, test_days=7, step_days=7, new_item_days=7)
    folds += random_ratio_folds(log, 0.2, 1, seed=0, new_item_days=7)  # every user gets test items
    print(f"built {len(folds)} folds in {time.perf_counter() - started:.1f}s")
    config = EvaluationConfig()
    results = []
    for fold in folds:
        for make in (PopularityRecommender, lambda: ALSRecommender(factors=64, iterations=15)):
            model = make()
            fit_started = time.perf_counter()
            model.fit(fold.train)
            fitted = time.perf_counter()
            score = score_fold(model, fold, catalog, config)
            seconds = time.perf_counter() - fitted
            results.append(
                {
                    "fold": fold.name,
                    "model": model.name,
                    "eval_users": fold.n_eval_users,
                    "catalog_items": fold.train.n_items,
                    "fit_s": round(fitted - fit_started, 2),
                    "eval_s": round(seconds, 2),
                    config.names.primary: round(score.metrics[config.names.primary], 4),
                }
            )
            print(json.dumps(results[-1]))
    table = pd.DataFrame(results)
    print()
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
