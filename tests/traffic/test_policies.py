"""Where slates come from: the exploration policy's logged propensities are the real frequencies, and
a server that answers outside the recommendations contract is named in one clear error."""

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from pipelines.traffic.policies import EpsilonGreedyPolicy, ListPolicy, ServerPolicy, TrafficError

CATALOG = [f"i{n:06d}" for n in range(8)]
LISTS = {"u000001": CATALOG[:3]}


def test_a_list_policy_shows_the_users_list_with_certainty():
    slate = ListPolicy(LISTS, "target").slate("u000001", 2)
    assert slate.items == tuple(CATALOG[:2]) and slate.propensities == (1.0, 1.0) and slate.variant == "target"


def test_exploration_propensities_are_the_frequencies_the_items_are_shown_with():
    policy = EpsilonGreedyPolicy(LISTS, CATALOG, 0.3, np.random.default_rng(0))
    n = 20_000
    counts: dict[tuple[int, str], int] = {}
    logged: dict[tuple[int, str], float] = {}
    for _ in range(n):
        slate = policy.slate("u000001", 3)
        assert len(set(slate.items)) == 3  # never an item twice in a slate
        for position, (item, p) in enumerate(zip(slate.items, slate.propensities, strict=True)):
            counts[position, item] = counts.get((position, item), 0) + 1
            logged[position, item] = p
    assert logged[0, CATALOG[0]] == pytest.approx(0.7) and logged[0, CATALOG[5]] == pytest.approx(0.3 / 5)
    for key, count in counts.items():
        assert count / n == pytest.approx(logged[key], abs=4 * np.sqrt(logged[key] / n) + 1e-3), key


def test_an_epsilon_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="epsilon must be in"):
        EpsilonGreedyPolicy(LISTS, CATALOG, 1.5, np.random.default_rng(0))


def server(status: int, body: dict) -> TestClient:
    app = FastAPI()

    @app.get("/v1/users/{user_id}/recommendations")
    def answer(user_id: str):
        return JSONResponse(body, status_code=status)

    return TestClient(app)


def test_a_server_answer_gives_the_request_id_items_and_variant():
    body = {"request_id": "r1", "items": [{"item_id": "i000001"}], "experiment": "e", "variant": "holdback"}
    slate = ServerPolicy(server(200, body), "test").slate("u1", 1)
    assert (slate.request_id, slate.items, slate.experiment, slate.variant) == ("r1", ("i000001",), "e", "holdback")


def test_a_server_error_status_is_named_with_the_path():
    with pytest.raises(TrafficError, match=r"test/v1/users/u1/recommendations: HTTP 503"):
        ServerPolicy(server(503, {"detail": "no publication"}), "test").slate("u1", 1)


def test_an_answer_outside_the_contract_is_named():
    with pytest.raises(TrafficError, match="not a recommendations answer"):
        ServerPolicy(server(200, {"items": []}), "test").slate("u1", 1)


def test_an_unreachable_server_is_named():
    import httpx

    with (
        httpx.Client(base_url="http://127.0.0.1:9", timeout=1) as client,
        pytest.raises(TrafficError, match="request failed"),
    ):
        ServerPolicy(client, "http://127.0.0.1:9").slate("u1", 1)
