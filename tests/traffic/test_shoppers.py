"""The click model of the traffic simulator: position bias, affinity, unknown items, the funnel."""

import numpy as np

from pipelines.simulate import simulated_world
from pipelines.traffic.shoppers import ADD_TO_CART, CLICK, PURCHASE, Shoppers
from tests.conftest import make_settings


def shoppers(tmp_path, **overrides) -> Shoppers:
    settings = make_settings(tmp_path / "home", sim_users=50, sim_items=40, sim_categories=4, **overrides)
    return Shoppers(simulated_world(settings), settings)


def test_examination_decays_with_position_and_a_bias_of_zero_looks_at_everything(tmp_path):
    biased = shoppers(tmp_path, traffic_position_bias=1.0).examination(5)
    assert np.all(np.diff(biased) < 0) and biased[0] == 1.0
    flat = shoppers(tmp_path / "flat", traffic_position_bias=0.0).examination(5)
    assert np.all(flat == 1.0)


def test_the_same_item_is_clicked_more_often_higher_up(tmp_path):
    model = shoppers(tmp_path)
    rows = np.array([3, 3, 3, 3])
    assert np.all(np.diff(model.click_probability(0, rows)) < 0)


def test_users_click_items_of_their_favourite_category_more(tmp_path):
    model = shoppers(tmp_path)
    world = model.world
    favourite = int(np.argmax(world.user_taste[0]))
    least = int(np.argmin(world.user_taste[0]))
    liked = model.attraction(0, world.items_by_category[favourite]).mean()
    disliked = model.attraction(0, world.items_by_category[least]).mean()
    assert liked > 2 * disliked


def test_an_item_outside_the_simulated_catalog_is_never_clicked(tmp_path):
    model = shoppers(tmp_path)
    rows = model.item_rows(["i000001", "not-an-item", "i999999", 7])
    assert rows.tolist() == [1, -1, -1, -1]
    assert model.attraction(0, rows)[1:].tolist() == [0.0, 0.0, 0.0]


def test_reactions_follow_the_funnel_and_repeat_for_a_seed(tmp_path):
    model = shoppers(tmp_path, traffic_click_scale=10.0, traffic_cart_share=1.0, traffic_purchase_share=1.0)
    rows = np.arange(10)
    first = model.react(np.random.default_rng(3), 1, rows)
    assert first == model.react(np.random.default_rng(3), 1, rows)
    by_position: dict[int, list[str]] = {}
    for reaction in first:
        by_position.setdefault(reaction.position, []).append(reaction.event_type)
    assert by_position and all(steps[0] == CLICK for steps in by_position.values())
    assert all(steps[:2] == [CLICK, ADD_TO_CART] for steps in by_position.values())
    for position, steps in by_position.items():
        assert (PURCHASE in steps) == bool(model.world.item_in_stock[position - 1])
