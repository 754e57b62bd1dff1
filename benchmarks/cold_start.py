"""Item cold start through content: ALS with and without the content map, on the simulator's new-item wave.

    PYTHONPATH=. nice -n 10 python benchmarks/cold_start.py [--seeds 42 43 44] [--lead-days 0 1]

The simulator runs with ``sim_shift=new_items``: on the launch day a quarter more items appear
and are popular at once. Each run cuts one global time fold ``--lead-days`` after the launch
(0: the wave exists in the catalog but nobody has touched it; 1: a day of events on it), so the
models meet the wave as production would. On the same fold and seed, each model is fitted and
scored by recforge's own evaluation (``models.evaluation.evaluate.score_fold``: the lists after
publication's rules, every metric on the held-out period), and on the wave itself:

- ``ndcg_at_10``: overall NDCG@10 of the served lists (what promotion decides on);
- ``wave.ndcg_at_10``: NDCG@10 with the held-out interactions restricted to wave items, over the
  users who have one;
- ``wave.exposure_at_10``: the share of top-10 slots given to wave items;
- ``new_items.ndcg_at_10`` / ``new_item_exposure_at_10``: the pipeline's own new-item metrics.

MovieLens (``--movielens``, titles and genres from ``--data-dir``): one global time cutoff holding
out the latest ``--ml-test-share`` of the ratings; movies first rated after it are the untouched
new items (the catalog lists every movie), so ``new_items.*`` measures cold start there.

Models: ``als`` (the reference), ``als_content`` with the TF-IDF encoder, and ``als_content`` with
TF-IDF + the packaged sentence model when the ``content`` extra is installed. The table reports the
median over seeds and each seed's ratio to ALS (median, min, max), so a shift of the whole
simulated world moves both sides together; no ratio where ALS is below 0.005 (it cannot know the items).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from models import algorithm  # noqa: E402
from models.columns import Columns  # noqa: E402
from models.content import sentence_model_available  # noqa: E402
from models.evaluation import EventLog, global_time_folds  # noqa: E402
from models.evaluation.evaluate import EvaluationConfig, fold_lists, score_fold  # noqa: E402
from models.evaluation.splits import EVENT_TS, SECONDS_PER_DAY  # noqa: E402
from models.metrics import calc_metrics  # noqa: E402
from pipelines.training.data import item_features  # noqa: E402

log = logging.getLogger("cold_start")
K = 10
RATIO_FLOOR = 0.005
HEADLINE = ("ndcg_at_10", "wave.ndcg_at_10", "wave.exposure_at_10", "new_items.ndcg_at_10", "new_item_exposure_at_10")


def simulated_world(work_dir: Path, seed: int, args) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(clean events, catalog, launch time in epoch seconds) of one simulated log with a new-item wave."""
    from pipelines.settings import Settings
    from pipelines.simulate import simulate

    settings = Settings(
        home=work_dir / "home",
        sim_users=args.users,
        sim_items=args.items,
        sim_days=args.days,
        sim_seed=seed,
        sim_shift="new_items",
        sim_shift_day=args.launch_day,
    )
    landing = work_dir / "landing"
    summary = simulate(settings, landing)
    weights = settings.signal_weights
    rows = []
    for path in sorted((landing / "events").glob("date=*/events.jsonl")):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
                stamp = pd.Timestamp(event["event_ts"]).timestamp()
            except (ValueError, TypeError, KeyError):
                continue
            if event.get("user_id") and event.get("event_type") in weights and stamp < 4e9:
                rows.append((event["event_id"], event["user_id"], event["item_id"], event["event_type"], stamp))
    events = pd.DataFrame(rows, columns=["event_id", Columns.User, Columns.Item, "event_type", "ts"])
    events = events.drop_duplicates("event_id")
    events = events[~events[Columns.User].isin(summary.bot_user_ids)]
    frame = pd.DataFrame(
        {
            Columns.User: events[Columns.User],
            Columns.Item: events[Columns.Item],
            EVENT_TS: pd.to_datetime(events["ts"], unit="s", utc=True),
            Columns.Weight: events["event_type"].map(weights),
        }
    )
    catalog = pd.read_json(landing / "catalog" / "items.jsonl", lines=True, dtype={"item_id": str})
    catalog["description"] = [a.get("description") for a in catalog["attributes"]]
    catalog["attributes"] = [json.dumps(a) for a in catalog["attributes"]]
    catalog["created_at"] = pd.to_datetime(catalog["created_at"], utc=True)
    launch = pd.Timestamp(settings.sim_start_date, tz="UTC") + pd.Timedelta(days=args.launch_day)
    return frame, catalog, launch.timestamp()


def models_to_compare() -> dict[str, dict]:
    """Label -> (algorithm, params): the reference and the content hybrids this machine can run."""
    compared = {
        "als": {"name": "als", "params": {}},
        "als_content (tfidf)": {"name": "als_content", "params": {"encoder": "tfidf"}},
    }
    if sentence_model_available():
        compared["als_content (tfidf+minilm)"] = {"name": "als_content", "params": {"encoder": "sentence"}}
    # Taught by head items only: a map that assumes a new item is as popular as the head (see README).
    compared["als_content (tfidf, warm_users=40)"] = {
        "name": "als_content",
        "params": {"encoder": "tfidf", "map_warm_users": 40},
    }
    return compared


def wave_metrics(model, fold, catalog: pd.DataFrame, lists: np.ndarray, launch_ts: float) -> dict[str, float]:
    """NDCG@10 on held-out wave items and the wave's share of top-10 slots."""
    relevant, _ = fold.columns_for(model.item_ids)
    column_ids = fold.column_ids(model.item_ids)
    created = catalog.set_index(Columns.Item)["created_at"].reindex(column_ids)
    is_wave = ((created - pd.Timestamp(launch_ts, unit="s", tz="UTC")).dt.total_seconds() >= 0).to_numpy()
    wave_relevant = relevant.multiply(is_wave.astype(np.float32)[None, :]).tocsr()
    wave_relevant.eliminate_zeros()
    metrics = calc_metrics(lists, wave_relevant, K, 50, k=K)
    top = lists[:, :K]
    filled = top[top >= 0]
    return {
        "wave.ndcg_at_10": float(metrics["ndcg_at_10"]),
        "wave.exposure_at_10": float(is_wave[filled].mean()) if filled.size else 0.0,
        "wave.users": int((np.diff(wave_relevant.indptr) > 0).sum()),
        "wave.items": int(is_wave[: len(model.item_ids)].sum()),
    }


def run_seed(seed: int, args, work_dir: Path) -> list[dict]:
    """Every lead of one simulated world: the same log, cut at each lead after the launch."""
    frame, catalog, launch_ts = simulated_world(work_dir / f"seed{seed}", seed, args)
    event_log = EventLog.from_frame(frame, args.half_life_days, item_features(catalog))
    return [row for lead in args.lead_days for row in run_fold(seed, lead, event_log, catalog, launch_ts, args)]


def movielens(name: str, args) -> tuple[EventLog, pd.DataFrame, float]:
    """(event log, catalog with titles and genres, cutoff): every rating a positive, the latest share held out."""
    from pipelines.ingest.sources import read_movielens_catalog

    directory = args.data_dir / name
    if name == "ml-100k":
        ratings = pd.read_csv(directory / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    else:
        ratings = pd.read_csv(directory / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item", "timestamp": "ts"}
        )
    frame = pd.DataFrame(
        {
            Columns.User: ratings["user"].astype(str),
            Columns.Item: ratings["item"].astype(str),
            EVENT_TS: pd.to_datetime(ratings["ts"], unit="s", utc=True),
            Columns.Weight: 1.0,
        }
    )
    catalog = read_movielens_catalog(directory)
    event_log = EventLog.from_frame(frame, args.half_life_days, item_features(catalog))
    cutoff = float(ratings["ts"].quantile(1.0 - args.ml_test_share))
    return event_log, catalog, cutoff


def run_fold(
    seed: int, lead_days: float, event_log, catalog: pd.DataFrame, launch_ts: float | None, args, cutoff=None
) -> list[dict]:
    """Every model on one fold; ``launch_ts`` (the simulated wave) adds the wave's metrics."""
    cutoff = launch_ts + lead_days * SECONDS_PER_DAY if cutoff is None else cutoff
    test_days = (event_log.end - cutoff) / SECONDS_PER_DAY
    fold = global_time_folds(event_log, 1, test_days, test_days, args.new_item_days)[0]
    log.info("seed %d, lead %g days: %s", seed, lead_days, fold.describe())
    config = EvaluationConfig(k=K, recall_k=50)
    rows = []
    for label, spec in models_to_compare().items():
        model = algorithm(spec["name"])(random_state=seed, **spec["params"])
        started = time.perf_counter()
        model.fit(fold.train)
        fit_seconds = time.perf_counter() - started
        scored = score_fold(model, fold, catalog, config)
        lists = fold_lists(model, fold, catalog, config)["rules"]
        row = {
            "seed": seed,
            "lead_days": lead_days,
            "model": label,
            "fit_seconds": fit_seconds,
            "items_known": len(model.item_ids),
            **{m: scored.metrics[m] for m in HEADLINE if m in scored.metrics},
            **(wave_metrics(model, fold, catalog, lists, launch_ts) if launch_ts is not None else {}),
        }
        log.info("  %-28s %s", label, "  ".join(f"{m}={row.get(m, float('nan')):.4f}" for m in HEADLINE))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    if "dataset" not in frame:
        frame["dataset"] = "simulated"
    frame["dataset"] = frame["dataset"].fillna("simulated")
    lines = []
    for (dataset, lead), group in frame.groupby(["dataset", "lead_days"], sort=False):
        reference = group[group["model"] == "als"].set_index(["seed", "lead_days"])
        metrics = [m for m in HEADLINE if m in group and group[m].notna().all()]
        if dataset == "simulated":
            lines.append(
                f"\nSimulated, wave launched {lead:g} day(s) before the cutoff ({group['seed'].nunique()} seeds):\n"
            )
        else:
            lines.append(f"\n{dataset}, latest ratings held out ({group['seed'].nunique()} seeds of the models):\n")
        header = "| model | " + " | ".join(metrics) + " | fit s |"
        lines += [header, "|" + "---|" * (len(metrics) + 2)]
        for label, model_rows in group.groupby("model", sort=False):
            cells = []
            for metric in metrics:
                values = model_rows.set_index(["seed", "lead_days"])[metric]
                ratio = values / reference[metric].reindex(values.index)
                cell = f"{values.median():.4f}"
                # A ratio to a reference near 0 (ALS on items it cannot know) says nothing: values only.
                if label != "als" and reference[metric].min() >= RATIO_FLOOR:
                    cell += f" ({ratio.median():.2f}x, {ratio.min():.2f}-{ratio.max():.2f})"
                cells.append(cell)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {model_rows['fit_seconds'].median():.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Not 42-44: the map's defaults were chosen on seeds 42 and 43.
    parser.add_argument("--seeds", type=int, nargs="+", default=[45, 46, 47])
    parser.add_argument("--lead-days", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--launch-day", type=int, default=21)
    parser.add_argument("--half-life-days", type=float, default=14.0)
    parser.add_argument("--new-item-days", type=float, default=7.0)
    parser.add_argument("--movielens", nargs="*", default=["ml-100k", "ml-latest-small"], help="also these sets")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--ml-test-share", type=float, default=0.1, help="MovieLens: latest share of ratings held out")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("models").setLevel(logging.WARNING)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recforge-cold-start-") as tmp:
        for n, seed in enumerate(args.seeds, 1):
            log.info("seed %d/%d: %d", n, len(args.seeds), seed)
            rows.extend(run_seed(seed, args, Path(tmp)))
    for name in args.movielens:
        event_log, catalog, cutoff = movielens(name, args)
        for seed in args.seeds:
            for row in run_fold(seed, 0.0, event_log, catalog, None, args, cutoff=cutoff):
                rows.append({**row, "dataset": name})
    table = markdown(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    elapsed = time.perf_counter() - started
    print(f"\ncold start: {len(rows)} fits over {len(args.seeds)} seeds in {elapsed:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
