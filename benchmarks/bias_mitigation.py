"""What the bias mitigations cost in accuracy and buy in calibration and exposure, on a simulated log and ml-100k.

    PYTHONPATH=. nice -n 10 python benchmarks/bias_mitigation.py [--datasets simulated ml-100k] [--out f.json]

Protocol: the data sets are loaded as ``benchmarks/models_quality.py`` loads them (simulated: recforge's
simulator, 3000 users, 1000 items, 28 days, seed 42, cleaned as ingestion would, with the catalog's
sellers; ml-100k: every rating a positive interaction, category = first genre, no seller). Training's
own evaluation code then cuts ``--folds`` rolling global time folds (``--test-days`` each), fits EASE
(the best model on both sets in models_quality) once per fold and scores it with
``models.evaluation.evaluate.score_fold`` under each variant of the list rules, all else at the
settings' defaults (category cap 0.4 of the top 10, cold-user blend):

- ``none``: no mitigation (the default rules);
- ``calibrated λ=…``: Steck's calibrated re-ranking of the top 10 at each weight;
- ``seller cap N``: at most N items of one seller in the top 10 (simulated only: ml-100k has no seller);
- ``both``: the middle calibration weight and the seller cap together.

Reported per variant, mean over folds: NDCG@10 and its change from ``none`` with a paired standard error
over users (same users, same fold), Steck's calibration KL, exposure Gini, long-tail share of slots,
seller exposure Gini, and the scoring time as a ratio to ``none`` (median and range of ``--repeat``
timings, taken in turns in the same process so load affects all alike).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from models.columns import Columns  # noqa: E402
from models.ease import EASERecommender  # noqa: E402
from models.evaluation import EvaluationConfig, EventLog, global_time_folds, score_fold  # noqa: E402
from models.evaluation.evaluate import FoldScore  # noqa: E402
from models.evaluation.exposure import gini, group_exposure  # noqa: E402
from models.evaluation.splits import EVENT_TS  # noqa: E402
from models.lists.ranked import ListRules  # noqa: E402

log = logging.getLogger("bias_mitigation")

LAMBDAS = (0.3, 0.6, 0.9)
SELLER_CAP = 2
K = 10


def load(dataset: str, data_dir: Path, work_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events: user_id, item_id, event_ts, weight; catalog: item_id, category, seller, in_stock, is_blocked)."""
    import models_quality

    if dataset == "ml-100k":
        events, features = models_quality.load_ml_100k(data_dir)
        features["seller"] = None
    else:
        events, features = models_quality.load_simulated(work_dir, users=3000, items=1000, days=28, seed=42)
        raw = pd.read_json(work_dir / "simulated-landing" / "catalog" / "items.jsonl", lines=True)
        sellers = dict(
            zip(raw[Columns.Item].astype(str), raw["attributes"].map(lambda a: a.get("seller")), strict=True)
        )
        features["seller"] = features[Columns.Item].astype(str).map(sellers)
    events = events.assign(**{EVENT_TS: pd.to_datetime(events["ts"], unit="s", utc=True)})
    catalog = features[[Columns.Item, Columns.Category, "seller"]].copy()
    catalog[Columns.Item] = catalog[Columns.Item].astype(str)
    catalog["in_stock"], catalog["is_blocked"] = True, False
    return events[[Columns.User, Columns.Item, EVENT_TS, Columns.Weight]], catalog


def variants(has_sellers: bool) -> dict[str, ListRules]:
    base = ListRules(top_n=max(K, 50))
    out = {"none": base}
    for lam in LAMBDAS:
        out[f"calibrated λ={lam:g}"] = ListRules(**{**base.__dict__, "calibration_lambda": lam})
    if has_sellers:
        out[f"seller cap {SELLER_CAP}"] = ListRules(**{**base.__dict__, "seller_cap": SELLER_CAP})
        both = {**base.__dict__, "calibration_lambda": LAMBDAS[1], "seller_cap": SELLER_CAP}
        out[f"both (λ={LAMBDAS[1]:g}, cap {SELLER_CAP})"] = ListRules(**both)
    return out


def seller_gini(score: FoldScore, catalog: pd.DataFrame, item_ids: np.ndarray) -> float:
    """Gini of exposure shares over sellers (NaN without sellers)."""
    names = catalog.set_index(Columns.Item).reindex(item_ids)["seller"]
    if names.isna().all():
        return float("nan")
    codes = np.full(len(item_ids), -1, dtype=np.int64)
    known = names.notna().to_numpy()
    codes[known] = np.unique(names[known].astype(str).to_numpy(), return_inverse=True)[1]
    audit = score.audit
    return gini(group_exposure(audit.recommended, codes, K, audit.allowed).exposure)


def run_dataset(dataset: str, args, work_dir: Path) -> dict:
    events, catalog = load(dataset, args.data_dir, work_dir)
    test_days = args.test_days[dataset]
    event_log = EventLog.from_frame(events, half_life_days=14.0)
    folds = global_time_folds(event_log, args.folds, test_days, test_days, 7.0)
    rules = variants(catalog["seller"].notna().any())
    rows: dict[str, dict[str, list]] = {name: {} for name in rules}
    for fold in folds:
        model = EASERecommender().fit(fold.train)
        scores, seconds = {}, {name: [] for name in rules}
        for _ in range(args.repeat):  # in turns, so load changes hit every variant alike
            for name, rule in rules.items():
                started = time.perf_counter()
                scores[name] = score_fold(model, fold, catalog, EvaluationConfig(k=K, recall_k=50, rules=rule))
                seconds[name].append(time.perf_counter() - started)
        reference = scores["none"].audit.ndcg
        for name, score in scores.items():
            delta = score.audit.ndcg - reference
            delta = delta[np.isfinite(delta)]
            m = score.metrics
            values = {
                "ndcg": m[f"ndcg_at_{K}"],
                "ndcg_delta": float(delta.mean()),
                "ndcg_delta_se": float(delta.std(ddof=1) / np.sqrt(len(delta))) if len(delta) > 1 else 0.0,
                "calibration_kl": m[f"calibration_kl_at_{K}"],
                "gini": m[f"exposure_gini_at_{K}"],
                "long_tail_share": m[f"long_tail_share_at_{K}"],
                "long_tail_interaction_share": m[f"long_tail_interaction_share_at_{K}"],
                "coverage": m[f"coverage_at_{K}"],
                "seller_gini": seller_gini(score, catalog, fold.train.item_ids),
                "time_ratio": list(np.array(seconds[name]) / np.array(seconds["none"])),
                "users": int(m["n_eval_users"]),
            }
            for key, value in values.items():
                rows[name].setdefault(key, []).append(value)
        log.info("%s %s: %s", dataset, fold.name, {n: round(s.metrics[f"ndcg_at_{K}"], 4) for n, s in scores.items()})
    summary = {}
    for name, values in rows.items():
        ratios = np.concatenate(values.pop("time_ratio"))
        summary[name] = {key: _mean(v) if key != "users" else int(np.sum(v)) for key, v in values.items()}
        summary[name]["time_ratio_median"] = float(np.median(ratios))
        summary[name]["time_ratio_range"] = [float(ratios.min()), float(ratios.max())]
    return {"folds": [f.name for f in folds], "test_days": test_days, "variants": summary}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def markdown(results: dict) -> str:
    lines = []
    for dataset, result in results.items():
        lines += [
            f"**{dataset}** ({len(result['folds'])} folds of {result['test_days']:g} days; EASE)",
            "",
            "| rules | NDCG@10 | ΔNDCG@10 vs none (± s.e.) | calibration KL | exposure Gini | long-tail share "
            "(interactions) | coverage | seller Gini | scoring time vs none |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, v in result["variants"].items():
            low, high = v["time_ratio_range"]
            seller = "n/a (no seller)" if np.isnan(v["seller_gini"]) else f"{v['seller_gini']:.3f}"
            lines.append(
                f"| {name} | {v['ndcg']:.4f} | {v['ndcg_delta']:+.4f} ± {v['ndcg_delta_se']:.4f} | "
                f"{v['calibration_kl']:.3f} | {v['gini']:.3f} | {v['long_tail_share']:.3f} "
                f"({v['long_tail_interaction_share']:.3f}) | {v['coverage']:.3f} | {seller} | "
                f"{v['time_ratio_median']:.2f}x ({low:.2f}-{high:.2f}) |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["simulated", "ml-100k"], choices=["simulated", "ml-100k"])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.test_days = {"simulated": 7.0, "ml-100k": 30.0}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            results[dataset] = run_dataset(dataset, args, Path(tmp))
    table = markdown(results)
    print(table)
    if args.out:
        facts = {
            "when": datetime.now(UTC).isoformat(),
            "machine": platform.machine(),
            "load_average": os.getloadavg(),
            "seconds": time.time() - started,
        }
        args.out.write_text(json.dumps({"facts": facts, "results": results}, indent=2) + "\n")
    variants_run = sum(len(r["variants"]) for r in results.values())
    print(f"bias mitigation: {len(results)} data sets, {variants_run} rule variants in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
