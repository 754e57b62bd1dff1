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
A (an oracle of their latent tastes): a clearly better variant, fully supported. ``compare`` takes
plain arrays, so the same check runs on rows from the server's impression log once serving
explores (the experiments branch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.experiments.off_policy import Estimate, LoggedSlates, evaluate, pick
from pipelines.settings import Settings
from pipelines.simulate import simulated_world
from pipelines.traffic.policies import EpsilonGreedyPolicy, ListPolicy
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
    if not 0 < online_visit_share <= 1:
        raise ValueError(f"online_visit_share must be in (0, 1], got {online_visit_share!r}")
    if not 0 <= keep <= settings.traffic_k:
        raise ValueError(f"keep must be in [0, traffic_k={settings.traffic_k}], got {keep!r}")
    logging_lists, target_lists, catalog = simulated_lists(settings, keep)
    explorer = EpsilonGreedyPolicy(logging_lists, catalog, epsilon, np.random.default_rng([settings.traffic_seed, 1]))
    logged = simulate_traffic(settings, explorer, write=False).shown.arrays()
    online_settings = settings.model_copy(
        update={
            "traffic_seed": settings.traffic_seed + 1,
            "traffic_visit_rate": settings.traffic_visit_rate * online_visit_share,
        }
    )
    online = simulate_traffic(online_settings, ListPolicy(target_lists, "target"), write=False).shown.arrays()
    world = simulated_world(settings)
    users = [world.user_id(u) for u in logged["user"].tolist()]
    target_item = np.array(
        [target_lists[user][p - 1] for user, p in zip(users, logged["position"].tolist(), strict=True)], dtype=object
    )
    return compare(logged, target_item, online, clip=settings.ope_clip)
