"""The off-policy check of issue 16: the IPS estimate of a variant's CTR from exploration logs falls
within the confidence interval of the CTR measured online for the same variant.

Two runs of the traffic simulator with the same users: the logging run shows each user an
epsilon-greedy slate around a list A (the propensities logged per shown item), the online run shows
other visits the target list B itself. ``compare`` estimates B's CTR from the logging run with IPS
(pipelines/experiments/off_policy.py) and measures it on the online run (clicks per shown item, its
standard error clustered by user: the same estimator with weight 1); the check holds when the
online interval covers the IPS value. The logging run is the larger one (an exploration log is
every user's traffic, a variant gets a share), so the IPS value's own noise is small against the
online interval; ``naive`` (the logging run's own CTR) is what one would say without weighting.

IPS can only see what exploration can show: a target item at slot k must be A's item at k or an
item outside A (serving's pool), never A's item at another slot (its propensity there is 0). The
simulator's B keeps A's first slots and fills the rest with the items the user likes best outside
A (an oracle of their latent tastes): a clearly better variant, fully supported. Two ways to run it:
``simulated_ips_check`` computes both policies in the simulator; ``server_ips_check`` publishes A
and B (pipelines/publication/explicit.py) and asks the live server, in process: the logging run's
slates come from serving's own exploration and their propensities from serving's impression log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.experiments.off_policy import Estimate, LoggedSlates, evaluate, pick
from pipelines.publication.explicit import publish_lists
from pipelines.settings import Settings
from pipelines.simulate import simulated_world
from pipelines.traffic.policies import EpsilonGreedyPolicy, ListPolicy, in_process_server
from pipelines.traffic.run import simulate_traffic
from pipelines.traffic.shoppers import Shoppers


@dataclass(frozen=True)
class IpsCheck:
    ips: Estimate  # the target's CTR estimated from the logging run
    online: Estimate  # the target's CTR measured online (weight 1)
    naive: float  # the logging run's own CTR

    @property
    def covered(self) -> bool:
        return self.online.covers(self.ips.value)

    def summary(self) -> str:
        return (
            f"IPS {self.ips.value:.4f} (ess {self.ips.ess:.0f}) vs online {self.online.value:.4f} "
            f"[{self.online.ci_low:.4f}, {self.online.ci_high:.4f}]: {'covered' if self.covered else 'NOT covered'}; "
            f"logging CTR {self.naive:.4f}"
        )


def compare(
    logged: dict[str, np.ndarray], target_item: np.ndarray, online: dict[str, np.ndarray], clip: float
) -> IpsCheck:
    """``logged`` and ``online``: ShownItems.arrays() of the two runs; ``target_item``: per logged row, the
    target's item at that row's user and position."""
    logs = LoggedSlates(logged["user"], logged["position"], logged["item"], logged["propensity"], logged["clicked"])
    ips = pick(evaluate(logs, target_item=target_item, clip=clip), "ips")
    measured = LoggedSlates(
        online["user"], online["position"], online["item"], np.ones(len(online["item"])), online["clicked"]
    )
    measured_ctr = pick(evaluate(measured, target_item=online["item"], clip=clip), "ips")
    return IpsCheck(ips, measured_ctr, float(np.mean(logged["clicked"])))


def simulated_lists(settings: Settings, keep: int) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(A, B, catalog): A ranks by popularity within the user's tastes; B keeps A's first ``keep`` slots and
    fills the rest with the items outside A the user is most attracted to (see the module docstring)."""
    world = simulated_world(settings)
    shoppers = Shoppers(world, settings)
    k = settings.traffic_k
    catalog_rows = np.arange(shoppers.n_items)
    catalog = [world.item_id(int(i)) for i in catalog_rows]
    logging_lists, target_lists = {}, {}
    for u in range(shoppers.n_users):
        taste = world.taste(u, world.days)[world.item_category]
        a = np.argsort(-(world.item_popularity * taste), kind="stable")[:k]
        attraction = shoppers.attraction(u, catalog_rows, world.days)
        attraction[a] = -1.0
        b = np.concatenate([a[:keep], np.argsort(-attraction, kind="stable")[: k - keep]])
        logging_lists[world.user_id(u)] = [catalog[i] for i in a]
        target_lists[world.user_id(u)] = [catalog[i] for i in b]
    return logging_lists, target_lists, catalog


def simulated_ips_check(
    settings: Settings, epsilon: float, keep: int = 2, online_visit_share: float = 0.25
) -> IpsCheck:
    """The check with both policies computed in the simulator: a logging run over ``traffic_days`` and an
    online run of B with ``online_visit_share`` of the visits and its own seed."""
    _check_arguments(settings, keep, online_visit_share)
    logging_lists, target_lists, catalog = simulated_lists(settings, keep)
    explorer = EpsilonGreedyPolicy(logging_lists, catalog, epsilon, np.random.default_rng([settings.traffic_seed, 1]))
    logged = simulate_traffic(settings, explorer, write=False).shown.arrays()
    online_policy = ListPolicy(target_lists, "target")
    online = simulate_traffic(_online_settings(settings, online_visit_share), online_policy, write=False).shown.arrays()
    return compare(logged, _target_items(settings, target_lists, logged), online, clip=settings.ope_clip)


def server_ips_check(settings: Settings, epsilon: float, keep: int = 2, online_visit_share: float = 0.25) -> IpsCheck:
    """The check through the live server on ``settings.home``: serving explores around a publication of A
    with its own exploration (serving/exploration.py) and logs each shown item's propensity in its
    impression log, which is all the estimate reads; then B is published and served as ranked to the online run.

    Serving draws its exploration from Python's ``random``; it is seeded from ``traffic_seed`` here, so
    a check repeats exactly.
    """
    import random

    _check_arguments(settings, keep, online_visit_share)
    logging_lists, target_lists, catalog = simulated_lists(settings, keep)
    publish_lists(settings, logging_lists, catalog, "logging")
    random.seed(settings.traffic_seed)
    with in_process_server(settings, exploration_epsilon=epsilon, impressions_sink="files") as server:
        logged = simulate_traffic(settings, server, write=False).shown.arrays()
    logged["propensity"] = logged_propensities(settings.home, logged["request_id"], logged["position"], logged["item"])
    publish_lists(settings, target_lists, catalog, "target")
    with in_process_server(settings, exploration_epsilon=0.0, impressions_sink="off") as server:
        online_settings = _online_settings(settings, online_visit_share)
        online = simulate_traffic(online_settings, server, write=False).shown.arrays()
    return compare(logged, _target_items(settings, target_lists, logged), online, clip=settings.ope_clip)


def logged_propensities(home, request_ids: np.ndarray, positions: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each shown item's propensity as the server's impression log recorded it, by request id and position.

    Every shown item must be in the log with the item the answer showed at that position: a missing
    or different one means the log and the answers disagree, and the estimate would be wrong, so it raises.
    """
    import pyarrow.parquet as pq

    from serving.impressions.format import FILE_PREFIX, PROPENSITIES, SUFFIX, landing_dir

    files = sorted(landing_dir(home).glob(f"date=*/{FILE_PREFIX}*{SUFFIX}"))  # sealed files only, never staged parts
    if not files:
        raise ValueError(f"no impression files under {landing_dir(home)}: was the server's impression log on?")
    logged = {}
    for path in files:
        table = pq.read_table(path, columns=["request_id", "item_ids", PROPENSITIES]).to_pydict()
        for request_id, shown, propensities in zip(
            table["request_id"], table["item_ids"], table[PROPENSITIES], strict=True
        ):
            for position, item in enumerate(shown, start=1):
                logged[request_id, position] = (item, propensities[position - 1] if propensities else None)
    result = np.empty(len(request_ids))
    for index, key in enumerate(zip(request_ids.tolist(), positions.tolist(), strict=True)):
        item, propensity = logged.get(key, (None, None))
        if item != items[index] or propensity is None:
            found = "nothing" if item is None else f"{item} with propensity {propensity}"
            raise ValueError(
                f"impression log: request {key[0]} position {key[1]} showed {items[index]}, the log has {found}"
            )
        result[index] = propensity
    return result


def _check_arguments(settings: Settings, keep: int, online_visit_share: float) -> None:
    if not 0 < online_visit_share <= 1:
        raise ValueError(f"online_visit_share must be in (0, 1], got {online_visit_share!r}")
    if not 0 <= keep <= settings.traffic_k:
        raise ValueError(f"keep must be in [0, traffic_k={settings.traffic_k}], got {keep!r}")


def _online_settings(settings: Settings, online_visit_share: float) -> Settings:
    """The online run: its own seed, ``online_visit_share`` of the logging run's visits."""
    return settings.model_copy(
        update={
            "traffic_seed": settings.traffic_seed + 1,
            "traffic_visit_rate": settings.traffic_visit_rate * online_visit_share,
        }
    )


def _target_items(settings: Settings, target_lists: dict[str, list[str]], logged: dict[str, np.ndarray]) -> np.ndarray:
    """Per logged row, the target's item at that row's user and position."""
    world = simulated_world(settings)
    users = [world.user_id(u) for u in logged["user"].tolist()]
    return np.array(
        [target_lists[user][p - 1] for user, p in zip(users, logged["position"].tolist(), strict=True)], dtype=object
    )
