"""Off-policy evaluation: a challenger's CTR estimated from logged exploration slates, before it gets
traffic. numpy only (no warehouse, Airflow or MLflow), so the tests run it on a seeded synthetic
logging world whose true click probabilities, and hence the target policy's true CTR, are known exactly.

Model (the item-position model; the slate decomposition of Li, Kim, Zitouni, Kveton and Pretorius 2018,
"Offline evaluation of ranking policies with click models", KDD, and the additive/independent-position
case of Swaminathan, Krishnamurthy, Agarwal, Dudik, Langford, Jose and Zitouni 2017, "Off-policy
evaluation for slate recommendation", NeurIPS): a click at position k depends only on the request
context, the item shown at k and k itself, not on the other items of the slate. Then the expected
clicks at position k under a target policy pi are E_x sum_a pi(a | k, x) r(x, a, k), and each logged
(slate, position) row is one contextual-bandit sample with the logging propensity p(a | k, x) of the
item it showed (what serving logs per shown item: the contract serving.impressions.format.PROPENSITIES,
made by serving/exploration.py). Cascade effects (a click at 1 lowering the chance at 2) break the
assumption and bias every estimate here.

Per row i, with w_i = min(pi_i / p_i, clip) (pi_i the target's probability of showing the logged item
at that position; 0/1 for a deterministic top-k list):

- IPS:   sum w_i c_i / n
- SNIPS: sum w_i c_i / sum w_i (self-normalised: bounded in [0, 1], a little bias, less variance)
- DR:    sum (dm_i + w_i (c_i - rhat_i)) / n, where rhat_i is the reward model at the logged
  (item, position) and dm_i = sum_a pi(a | k, x) rhat(a, k) its value under the target (for a
  deterministic target, rhat at the target's item for that position). Unbiased if either the
  propensities or the reward model are right; lower variance the better the reward model.

Every estimate is a ratio of per-cluster sums (numerator S_g, denominator N_g); the cluster is the user
(or the request), because a user's rows are correlated, and the standard error is the delta-method one
sum_g (S_g - V N_g)^2 / (sum_g N_g)^2 x G / (G - 1). The effective sample size (sum w)^2 / sum w^2
says how many logged rows the estimate is really worth; a small one means the target strays far from
what was logged. Clipping trades variance for a downward bias (clicks of heavily up-weighted rows are
counted less); the setting is RECFORGE_OPE_CLIP.

On the warehouse (:func:`evaluate_experiment`, ``recforge experiments off-policy``): the logged rows are
an experiment's shown slates in raw.impression_items (the logging propensity per shown item) joined with
marts.slate_items (the click); the target is a shadow variant of the same experiment, whose slate is
computed and logged for the same request ids, so its item at each (request, position) is the
deterministic target. Another challenger can be scored from Python by computing its item per logged
(request, position) and calling :func:`evaluate` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

ESTIMATORS = ("ips", "snips", "dr")


class OffPolicyInputError(ValueError):
    """Logged rows the estimators cannot use; the message names the column and the first bad row."""


@dataclass(frozen=True)
class LoggedSlates:
    """One row per shown item of a logged slate.

    ``cluster`` is the standard-error unit (user id or request id codes, any hashable values);
    ``position`` 1-based; ``item`` item ids or codes; ``propensity`` the logging policy's probability of
    showing that item at that position (in (0, 1]); ``clicked`` 0/1.
    """

    cluster: np.ndarray
    position: np.ndarray
    item: np.ndarray
    propensity: np.ndarray
    clicked: np.ndarray


@dataclass(frozen=True)
class Estimate:
    estimator: str
    position: int | None  # None: all positions pooled (clicks per shown item)
    value: float
    se: float
    ci_low: float
    ci_high: float
    n_rows: int
    n_clusters: int
    ess: float  # effective sample size of the importance weights
    clipped_share: float  # share of rows whose weight was clipped

    def covers(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _validate(logs: LoggedSlates, target_prob: np.ndarray | None, target_item: np.ndarray | None) -> None:
    n = len(logs.propensity)
    for name in ("cluster", "position", "item", "clicked"):
        if len(getattr(logs, name)) != n:
            raise OffPolicyInputError(f"column {name!r} has {len(getattr(logs, name))} rows, propensity has {n}")
    if n == 0:
        raise OffPolicyInputError("no logged rows to evaluate")
    try:
        prop = np.asarray(logs.propensity, dtype=float)
    except (TypeError, ValueError) as err:
        raise OffPolicyInputError(f"column 'propensity' is not numeric: {err}") from err
    if np.isnan(prop).any():
        raise OffPolicyInputError(
            f"column 'propensity' is missing at row {_first_bad(np.isnan(prop))} "
            f"({int(np.isnan(prop).sum())} rows): was exploration logging on?"
        )
    bad = (prop <= 0) | (prop > 1)
    if bad.any():
        i = _first_bad(bad)
        raise OffPolicyInputError(f"column 'propensity' must be in (0, 1], row {i} has {prop[i]!r}")
    clicked = np.asarray(logs.clicked, dtype=float)
    bad = ~np.isin(clicked, (0.0, 1.0))
    if bad.any():
        i = _first_bad(bad)
        raise OffPolicyInputError(f"column 'clicked' must be 0 or 1, row {i} has {clicked[i]!r}")
    pos = np.asarray(logs.position)
    bad = pos < 1
    if bad.any():
        raise OffPolicyInputError(
            f"column 'position' must be >= 1 (1-based), row {_first_bad(bad)} has {pos[_first_bad(bad)]!r}"
        )
    if (target_prob is None) == (target_item is None):
        raise OffPolicyInputError("give exactly one of target_prob (per row) and target_item (per row)")
    tgt = target_prob if target_prob is not None else target_item
    name = "target_prob" if target_prob is not None else "target_item"
    if len(tgt) != n:
        raise OffPolicyInputError(f"column {name!r} has {len(tgt)} rows, the logs have {n}")
    if target_prob is not None:
        tp = np.asarray(target_prob, dtype=float)
        bad = np.isnan(tp) | (tp < 0) | (tp > 1)
        if bad.any():
            i = _first_bad(bad)
            raise OffPolicyInputError(f"column 'target_prob' must be in [0, 1], row {i} has {tp[i]!r}")


def item_position_ctr(logs: LoggedSlates, prior_strength: float = 10.0) -> dict[tuple, float]:
    """The simple reward model: CTR per (item, position) from the logs, shrunk toward the position's CTR
    with ``prior_strength`` pseudo-impressions (items the logging policy rarely showed get the position's
    CTR rather than a noisy 0 or 1). Unknown (item, position) pairs fall back via ``reward_lookup``."""
    pos = np.asarray(logs.position)
    clicked = np.asarray(logs.clicked, dtype=float)
    model: dict[tuple, float] = {}
    for k in np.unique(pos):
        at = pos == k
        base = float(clicked[at].mean())
        model[("__position__", int(k))] = base
        items, inv = np.unique(np.asarray(logs.item)[at], return_inverse=True)
        clicks = np.bincount(inv, weights=clicked[at], minlength=len(items))
        shows = np.bincount(inv, minlength=len(items))
        for it, c, s in zip(items.tolist(), clicks, shows, strict=True):
            model[(it, int(k))] = float((c + prior_strength * base) / (s + prior_strength))
    return model


def reward_lookup(model: dict[tuple, float], items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The reward model at each (item, position); the position's CTR for a pair it never saw (0 if the
    position itself is unknown)."""
    out = np.empty(len(items))
    for i, (it, k) in enumerate(zip(np.asarray(items).tolist(), np.asarray(positions).tolist(), strict=True)):
        v = model.get((it, int(k)))
        out[i] = v if v is not None else model.get(("__position__", int(k)), 0.0)
    return out


def _ratio(cluster_codes: np.ndarray, n_clusters: int, num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    s = np.bincount(cluster_codes, weights=num, minlength=n_clusters)
    d = np.bincount(cluster_codes, weights=den, minlength=n_clusters)
    keep = d != 0
    s, d = s[keep], d[keep]
    total = d.sum()
    if total <= 0:
        return float("nan"), float("nan")
    v = s.sum() / total
    g = len(s)
    if g < 2:
        return float(v), float("nan")
    var = float(((s - v * d) ** 2).sum() / total**2 * g / (g - 1))
    return float(v), math.sqrt(var)


def evaluate(
    logs: LoggedSlates,
    *,
    target_prob: np.ndarray | None = None,
    target_item: np.ndarray | None = None,
    target_dm: np.ndarray | None = None,
    reward_model: dict[tuple, float] | None = None,
    reward_logged: np.ndarray | None = None,
    clip: float = 100.0,
    alpha: float = 0.05,
) -> list[Estimate]:
    """IPS, SNIPS and DR estimates of the target policy's CTR, per position and pooled (position None).

    The target is either ``target_item`` (a deterministic ranking: per row, the item the target would show
    at that row's request and position; the weight's numerator is the indicator) or ``target_prob`` (per
    row, the target's probability of the logged item there). DR needs the reward model's value under the
    target: computed from ``target_item`` directly, or supplied per row as ``target_dm`` with
    ``target_prob`` (DR is then omitted when ``target_dm`` is missing). ``reward_model`` maps
    (item, position) -> CTR; by default :func:`item_position_ctr` of the logs themselves. A reward model
    that also sees the context (user) is passed per row instead: ``reward_logged`` (its value at the
    logged item) with ``target_dm`` (its value under the target).
    """
    _validate(logs, target_prob, target_item)
    if not clip >= 1:
        raise OffPolicyInputError(f"clip must be >= 1, got {clip!r}")
    if not 0 < alpha < 1:
        raise OffPolicyInputError(f"alpha must be in (0, 1), got {alpha!r}")
    for name, col in (("target_dm", target_dm), ("reward_logged", reward_logged)):
        if col is not None and len(col) != len(logs.propensity):
            raise OffPolicyInputError(f"column {name!r} has {len(col)} rows, the logs have {len(logs.propensity)}")
    if reward_logged is not None and target_dm is None:
        raise OffPolicyInputError("reward_logged needs target_dm (the same reward model's value under the target)")
    prop = np.asarray(logs.propensity, dtype=float)
    clicked = np.asarray(logs.clicked, dtype=float)
    pos = np.asarray(logs.position).astype(int)
    items = np.asarray(logs.item)
    if target_item is not None:
        pi = (items == np.asarray(target_item)).astype(float)
    else:
        pi = np.asarray(target_prob, dtype=float)
    raw_w = pi / prop
    w = np.minimum(raw_w, clip)
    clipped = raw_w > clip

    model = reward_model if reward_model is not None else item_position_ctr(logs)
    dm: np.ndarray | None
    if target_dm is not None:
        dm = np.asarray(target_dm, dtype=float)
    elif target_item is not None:
        shows = np.array([t is not None for t in np.asarray(target_item).tolist()])
        dm = np.where(shows, reward_lookup(model, np.asarray(target_item), pos), 0.0)  # None: shows nothing there
    else:
        dm = None
    if reward_logged is not None:
        rhat = np.asarray(reward_logged, dtype=float)
    else:
        rhat = reward_lookup(model, items, pos) if dm is not None else None

    codes, _ = _codes(logs.cluster)
    n_clusters = int(codes.max()) + 1
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    out: list[Estimate] = []
    for k in [*np.unique(pos).tolist(), None]:
        at = np.ones(len(pos), dtype=bool) if k is None else pos == k
        c, ww, cc = codes[at], w[at], clicked[at]
        ones = np.ones(int(at.sum()))
        parts = {"ips": (ww * cc, ones), "snips": (ww * cc, ww)}
        if dm is not None and rhat is not None:
            parts["dr"] = (dm[at] + ww * (cc - rhat[at]), ones)
        sum_w2 = float((ww**2).sum())
        ess = float(ww.sum() ** 2 / sum_w2) if sum_w2 > 0 else 0.0
        for name, (num, den) in parts.items():
            v, se = _ratio(c, n_clusters, num, den)
            out.append(
                Estimate(
                    estimator=name,
                    position=None if k is None else int(k),
                    value=v,
                    se=se,
                    ci_low=v - z * se,
                    ci_high=v + z * se,
                    n_rows=int(at.sum()),
                    n_clusters=int(len(np.unique(c))),
                    ess=ess,
                    clipped_share=float(clipped[at].mean()),
                )
            )
    return out


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(np.asarray(values), return_inverse=True)
    return inv.astype(np.int64), uniq


def pick(estimates: list[Estimate], estimator: str, position: int | None = None) -> Estimate:
    """The estimate of one estimator at one position (None: pooled)."""
    for e in estimates:
        if e.estimator == estimator and e.position == position:
            return e
    raise KeyError(f"no {estimator} estimate at position {position}")


def format_estimates(estimates: list[Estimate]) -> str:
    """A plain table, one line per estimator and position."""
    lines = [f"{'estimator':<8} {'position':>8} {'ctr':>8} {'ci95':>19} {'rows':>8} {'ess':>9} {'clipped':>8}"]
    for e in estimates:
        p = "all" if e.position is None else str(e.position)
        lines.append(
            f"{e.estimator:<8} {p:>8} {e.value:8.4f} [{e.ci_low:8.4f},{e.ci_high:8.4f}] {e.n_rows:8d} "
            f"{e.ess:9.1f} {e.clipped_share:8.3%}"
        )
    return "\n".join(lines)


def evaluate_experiment(
    con, experiment: str, target_variant: str, *, clip: float, alpha: float = 0.05
) -> list[Estimate]:
    """Score ``target_variant`` (a shadow variant: logged for the same requests, never shown) on the
    experiment's shown slates, clustered by user. ``con`` is a DuckDB connection to the warehouse."""
    rows = con.execute(
        """
        with target as (
            select request_id, position, item_id as target_item
            from raw.impression_items where experiment = ? and variant = ?
        )
        select i.user_id, i.request_id, i.position, i.item_id, i.propensity, s.clicked, t.target_item
        from raw.impression_items i
        join marts.slate_items s
          on s.request_id = i.request_id and s.position = i.position and s.item_id = i.item_id
             and s.variant is not distinct from i.variant
        join (select distinct request_id from target) r on r.request_id = i.request_id
        left join target t on t.request_id = i.request_id and t.position = i.position
        where i.experiment = ? and i.variant is distinct from ? and not i.shadow
        order by i.request_id, i.position
        """,
        [experiment, target_variant, experiment, target_variant],
    ).fetchall()
    if not rows:
        raise OffPolicyInputError(
            f"no shown slates of experiment {experiment!r} with a logged {target_variant!r} slate for the same "
            "request (is it a shadow variant of that experiment, and has the mart been built?)"
        )
    for user, request, position, _, propensity, _, _ in rows:
        if propensity is None:
            raise OffPolicyInputError(
                f"column 'propensity' is missing in raw.impression_items for request {request!r} position "
                f"{position} (user {user!r}): off-policy evaluation needs slates logged with exploration on"
            )
    cols = list(zip(*rows, strict=True))
    logs = LoggedSlates(
        cluster=np.array([u if u is not None else f"request:{r}" for u, r in zip(cols[0], cols[1], strict=True)]),
        position=np.array(cols[2], dtype=int),
        item=np.array(cols[3], dtype=object),
        propensity=np.array(cols[4], dtype=float),
        clicked=np.array(cols[5], dtype=float),
    )
    return evaluate(logs, target_item=np.array(cols[6], dtype=object), clip=clip, alpha=alpha)
