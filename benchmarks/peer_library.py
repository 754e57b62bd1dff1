"""Benchmark: recforge's EASE and SASRec beside RecTools' on the same split, scored by the same code.

    PYTHONPATH=. python benchmarks/peer_library.py                                   # ml-100k, stratified
    PYTHONPATH=. python benchmarks/peer_library.py --datasets ml-100k ml-latest-small --protocol global_time

Why: every quality figure in benchmarks/README.md comes from recforge's own models and metric code; a
peer library run on the same splits anchors them to code we did not write. The same EASE closed form
at the same lambda must give the same lists (a check of both the model and the evaluation); SASRec is
compared at each library's own defaults.

How: the split is `models_quality.prepare`'s (the same seed and protocol, so the same training and held-out
ratings). RecTools (pinned below) is installed by this script into its own virtual environment (`--venv`,
outside the repository; never a recforge dependency; torch is the CPU 2.13.0 build this machine holds);
a child process in that environment reads the training events, fits RecTools' models and writes each
one's top-50 lists for the evaluated users with their training items filtered out. This process maps the
lists back to recforge's item indices and scores them with `models_quality.list_metrics`, exactly as
recforge's own models are scored (same users, same relevant items). Results go to ``--out`` (JSON) and
stdout (a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.models_quality import (  # noqa: E402
    PROTOCOLS,
    evaluated_users,
    list_metrics,
    load_split,
    make_model,
    prepare,
    read_split_events,
    training_mask,
)
from models import algorithm  # noqa: E402
from models.columns import Columns  # noqa: E402

RECTOOLS = "rectools[torch]==0.19.0"
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; anything else downloads CUDA
# pyarrow: the lists cross over as Parquet (before 19: RecTools holds numpy below 2, which pyarrow 19+ refuses)
PEER_PACKAGES = (TORCH, RECTOOLS, "pyarrow>=15,<19")
TOP_K = 50
RECFORGE_EASE_LAMBDA = algorithm("ease")().params()["regularization"]  # RecTools fits EASE at it too

# Every model of a comparison, each row's name defined here once: recforge's (by registered name) and
# RecTools' (a class of `rectools.models` and its arguments, which the child builds). `closed_form`: the
# row's top-10 is compared with EASE's closed form at RECFORGE_EASE_LAMBDA.
RECFORGE_MODELS = (
    {"name": f"recforge ease (lambda {RECFORGE_EASE_LAMBDA:g}, its default)", "model": "ease", "closed_form": True},
    {"name": "recforge sasrec (its defaults)", "model": "sasrec", "closed_form": False},
)
PEER_MODELS = (
    {"name": f"rectools ease (lambda {RECFORGE_EASE_LAMBDA:g})", "class": "EASEModel",
     "kwargs": {"regularization": RECFORGE_EASE_LAMBDA}, "closed_form": True},
    {"name": "rectools ease (its default, lambda 500)", "class": "EASEModel", "kwargs": {}, "closed_form": False},
    {"name": "rectools sasrec (its defaults)", "class": "SASRecModel", "kwargs": {"deterministic": True},
     "closed_form": False},
)  # fmt: skip

# Runs inside the peer environment: nothing of recforge is importable there. It reads the training events,
# the users to list and the models (PEER_MODELS) from its work directory, and writes each model's lists.
PEER_CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd, torch
import rectools.models
from rectools import Columns
from rectools.dataset import Dataset

work = sys.argv[1]
job = json.load(open(f"{work}/job.json"))
dataset = Dataset.construct(pd.read_parquet(f"{work}/train.parquet"))
users = pd.read_parquet(f"{work}/users.parquet")["user_id"].tolist()
timings = {}
for number, spec in enumerate(job["models"]):
    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])
    model = getattr(rectools.models, spec["class"])(**spec["kwargs"])
    started = time.perf_counter()
    model.fit(dataset)
    timings[spec["name"]] = time.perf_counter() - started
    lists = model.recommend(users=users, dataset=dataset, k=job["top_k"], filter_viewed=True)
    lists.assign(model=spec["name"])[["model", Columns.User, Columns.Item, Columns.Rank]].to_parquet(
        f"{work}/lists_{number}.parquet"
    )
    print(json.dumps({"model": spec["name"], "fit_seconds": timings[spec["name"]]}), flush=True)
json.dump(timings, open(f"{work}/timings.json", "w"))
"""


def peer_python(venv: Path) -> Path:
    """The peer environment's interpreter, created and filled on first use (pinned RecTools)."""
    python = venv / "bin" / "python"
    stamp = venv / ".recforge-peer-installed"
    if not stamp.exists() or stamp.read_text() != " ".join(PEER_PACKAGES):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        stamp.write_text(" ".join(PEER_PACKAGES))
    return python


def peer_lists(python: Path, training: pd.DataFrame, user_ids: np.ndarray, seed: int) -> tuple[pd.DataFrame, dict]:
    """RecTools' lists (every model in PEER_MODELS) for `user_ids`, fitted on the `training` events, and
    each model's fit seconds."""
    with tempfile.TemporaryDirectory(prefix="recforge-peer-") as work:
        pd.DataFrame(
            {
                "user_id": training[Columns.User].astype(str),
                "item_id": training[Columns.Item].astype(str),
                "weight": training[Columns.Weight].astype(float),
                "datetime": pd.to_datetime(training[Columns.LastTs], unit="s"),
            }
        ).to_parquet(Path(work) / "train.parquet")
        pd.DataFrame({"user_id": user_ids}).to_parquet(Path(work) / "users.parquet")
        job = {
            "seed": seed,
            "top_k": TOP_K,
            "models": [{k: m[k] for k in ("name", "class", "kwargs")} for m in PEER_MODELS],
        }
        (Path(work) / "job.json").write_text(json.dumps(job))
        # cwd = work: PyTorch Lightning writes its logs where it runs.
        subprocess.run(
            [str(python), "-c", PEER_CHILD, work], check=True, cwd=work, env={**os.environ, "PYTHONPATH": ""}
        )
        lists = pd.concat([pd.read_parquet(p) for p in sorted(Path(work).glob("lists_*.parquet"))])
        timings = json.loads((Path(work) / "timings.json").read_text())
    return lists, timings


def as_item_matrix(lists: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """One model's lists as recforge's (users x TOP_K) item indices, -1 past a short list."""
    row = pd.Index(user_ids).get_indexer(lists["user_id"].astype(str))
    col = pd.Index(item_ids).get_indexer(lists["item_id"].astype(str))
    if (row < 0).any() or (col < 0).any():
        raise SystemExit("the peer library listed a user or item outside the training data: not the same split")
    items = np.full((len(user_ids), TOP_K), -1, dtype=np.int64)
    items[row, lists["rank"].to_numpy() - 1] = col
    return items


def closed_form_orders(train, users: np.ndarray, regularization: float) -> dict[str, np.ndarray]:
    """Top-10 of EASE's closed form in float64 (B = -P / diag(P), zero diagonal, P the inverse of X'X + λI)
    for `users`, training items excluded: scores X·B (the model as Steck 2019 defines it: item j's column
    is the regression of item j on the others) and, to name what a list that differs from it computes,
    X·Bᵀ."""
    x = (train.matrix > 0).astype(np.float64)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += regularization
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    history = x[users]
    orders = {}
    for name, matrix in (("X·B", weights), ("X·Bᵀ", weights.T)):
        scores = np.asarray(history @ matrix)
        scores[history.nonzero()] = -np.inf
        orders[name] = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return orders


def agreement(items: np.ndarray, orders: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of users whose top-10 is, item for item, each closed form's."""
    return {
        f"top10_equals_{name}": float((items[:, :10] == order).all(axis=1).mean()) for name, order in orders.items()
    }


def compare(dataset: str, args, work_dir: Path, python: Path) -> list[dict]:
    target = prepare(dataset, args, work_dir)
    train, relevant, facts = load_split(target)
    users = evaluated_users(train, relevant)
    user_ids, item_ids = train.user_ids[users].astype(str), train.item_ids.astype(str)
    orders = closed_form_orders(train, users, RECFORGE_EASE_LAMBDA)

    def row(spec: dict, items: np.ndarray, fit_seconds: float) -> dict:
        checked = agreement(items, orders) if spec["closed_form"] else {}
        return {
            "model": spec["name"],
            "fit_seconds": fit_seconds,
            **list_metrics(items, relevant[users], train),
            **checked,
        }

    rows = []
    for spec in RECFORGE_MODELS:
        model = make_model(spec["model"], facts["test_days"], train.n_items, args.seed)
        started = time.perf_counter()
        model.fit(train)
        fitted = time.perf_counter() - started
        rows.append(row(spec, model.recommend(users, TOP_K)[0], fitted))
    events, facts = read_split_events(target)
    lists, timings = peer_lists(python, events[training_mask(events, facts)], user_ids, args.seed)
    for spec in PEER_MODELS:
        items = as_item_matrix(lists[lists["model"] == spec["name"]], user_ids, item_ids)
        rows.append(row(spec, items, timings[spec["name"]]))
    return [r | {"dataset": dataset, "protocol": args.protocol, "users": int(len(users))} for r in rows]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| data set (protocol, users) | model | NDCG@10 | Precision@10 | Recall@10 | MAP@10 | fit s "
        f"| top-10 = closed form X·B / X·Bᵀ (λ {RECFORGE_EASE_LAMBDA:g}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} ({r['protocol']}, {r['users']}) | {r['model']} | {r['ndcg_at_10']:.4f} ± "
            f"{r['ndcg_at_10_se']:.4f} | {r['precision_at_10']:.4f} | {r['recall_at_10']:.4f} | "
            f"{r['map_at_10']:.4f} | {r['fit_seconds']:.1f} | {_shares(r)} |"
        )
    return "\n".join(lines)


def _shares(row: dict) -> str:
    if "top10_equals_X·B" not in row:
        return ""
    return f"{row['top10_equals_X·B']:.1%} / {row['top10_equals_X·Bᵀ']:.1%} of users"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=("ml-100k", "ml-latest-small"))
    parser.add_argument("--protocol", choices=PROTOCOLS, default="stratified")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--test-share", type=float, default=0.2, help="global_time: share of events held out")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/recforge-peer-venv"), help="RecTools' own environment")
    parser.add_argument("--out", type=Path, default=Path("peer_library.json"))
    args = parser.parse_args(argv)
    python = peer_python(args.venv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recforge-peer-split-") as work_dir:
        for dataset in args.datasets:
            rows += compare(dataset, args, Path(work_dir), python)
    print(markdown(rows))
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "rectools": RECTOOLS,
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
            },  # fmt: skip
            indent=1,
            default=float,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
