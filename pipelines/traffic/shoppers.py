"""How a simulated user reacts to a slate: the position-based click model, then the purchase funnel.

Why this model: it is the one the off-policy estimators assume (the item-position model of
pipelines/experiments/off_policy.py), so the simulator can check them, and it has the two effects a
real slate shows. A user looks at position p with probability 1 / p^b (``traffic_position_bias`` b:
attention decays down the list, whatever is shown there), and clicks an item looked at with
probability 1 - exp(-s x relevance) (``traffic_click_scale`` s), where relevance is the user's taste
for the item's category (x the number of categories, so 1 is an average category) times their
latent affinity to the item (the same two the simulated log was drawn from, pipelines/simulate.py)
plus a small constant (an item of a category a user never browses still gets the odd curious click).
A click adds to the cart with ``traffic_cart_share``; an add-to-cart of an in-stock item is bought
with ``traffic_purchase_share`` at the item's price. Looking and clicking are independent per
position, so a click at one position does not change the chance at another (no cascade).

An item id the simulated catalog does not hold (another data set's publication) is never clicked
and is counted, so a run against the wrong server says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.settings import Settings

CLICK, ADD_TO_CART, PURCHASE = "click", "add_to_cart", "purchase"
CURIOSITY = 0.2  # relevance every item has, so a slate outside a user's tastes still gets a rare click


@dataclass(frozen=True)
class Reaction:
    position: int  # 1-based
    event_type: str
    value: float | None  # the price for add_to_cart and purchase


class Shoppers:
    """The simulated users and catalog, and their click model (see the module docstring)."""

    def __init__(self, world, settings: Settings):
        self.world = world
        self.position_bias = settings.traffic_position_bias
        self.click_scale = settings.traffic_click_scale
        self.cart_share = settings.traffic_cart_share
        self.purchase_share = settings.traffic_purchase_share
        self.n_items = len(world.item_category)
        self.n_users = len(world.user_taste)
        self.n_categories = len(world.category_names)

    def user_id(self, u: int) -> str:
        return self.world.user_id(u)

    def item_rows(self, item_ids) -> np.ndarray:
        """The catalog row of each item id (``i000042`` -> 42); -1 for an id the simulated catalog lacks."""
        rows = np.full(len(item_ids), -1, dtype=np.int64)
        for n, item in enumerate(item_ids):
            if isinstance(item, str) and len(item) == 7 and item[0] == "i" and item[1:].isdigit():
                row = int(item[1:])
                if row < self.n_items:
                    rows[n] = row
        return rows

    def examination(self, count: int) -> np.ndarray:
        """Probability of looking at positions 1..count."""
        return 1.0 / np.arange(1, count + 1, dtype=float) ** self.position_bias

    def attraction(self, u: int, rows: np.ndarray, day: int = 0) -> np.ndarray:
        """Probability that user ``u`` clicks each item (catalog rows; -1: unknown, never) once looked at."""
        known = rows >= 0
        out = np.zeros(len(rows))
        if known.any():
            items = rows[known]
            taste = self.world.taste(u, day)[self.world.item_category[items]] * self.n_categories
            relevance = taste * self.world.affinity(u, items) + CURIOSITY
            out[known] = 1.0 - np.exp(-self.click_scale * relevance)
        return out

    def click_probability(self, u: int, rows: np.ndarray, day: int = 0) -> np.ndarray:
        """Probability of a click at each position of a slate (examination x attraction)."""
        return self.examination(len(rows)) * self.attraction(u, rows, day)

    def react(self, rng: np.random.Generator, u: int, rows: np.ndarray, day: int = 0) -> list[Reaction]:
        """What user ``u`` does with a slate of catalog rows, in position order."""
        clicked = rng.random(len(rows)) < self.click_probability(u, rows, day)
        reactions = []
        for position in np.flatnonzero(clicked):
            row = int(rows[position])
            reactions.append(Reaction(int(position) + 1, CLICK, None))
            if rng.random() >= self.cart_share:
                continue
            price = float(self.world.item_price[row])
            reactions.append(Reaction(int(position) + 1, ADD_TO_CART, price))
            if self.world.item_in_stock[row] and rng.random() < self.purchase_share:
                reactions.append(Reaction(int(position) + 1, PURCHASE, price))
        return reactions
