"""Where a simulated visit's slate comes from: one small interface, so the simulator and the off-policy
check run the same way against the live server and against a policy computed in the simulator.

``ServerPolicy`` asks serving's recommendations endpoint: over HTTP (``traffic_base_url``) or
in-process (FastAPI's TestClient on ``serving.main.create_app``; ``in_process_server``). The answer's
``request_id`` is what the user's events carry back; its ``experiment`` and ``variant`` (present when
serving routes by a running experiment) say which arm the user saw. The server logs each shown item's
propensity in its impressions, not in the answer, so a server slate carries none here.

``ListPolicy`` shows each user a fixed list (a deterministic target), ``EpsilonGreedyPolicy`` explores
around such a list exactly as serving's exploration does (serving/exploration.py on the experiments
branch): each slot independently, with probability epsilon, is swapped for an item of the pool (the
catalog less the ranked slate), the swapped slots drawing from the pool without replacement, so an item
keeps propensity 1 - epsilon at its ranked slot and epsilon / pool size elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipelines.settings import Settings


class TrafficError(RuntimeError):
    """The server could not be asked, or answered something else than the recommendations contract."""


@dataclass(frozen=True)
class Slate:
    request_id: str
    items: tuple[str, ...]
    propensities: tuple[float, ...] | None = None  # each shown item's logging probability, when known
    experiment: str | None = None
    variant: str | None = None


class Policy(Protocol):
    def slate(self, user_id: str, k: int) -> Slate: ...


class ServerPolicy:
    """The live server's recommendations; ``client`` is an httpx.Client (base URL set) or a TestClient."""

    def __init__(self, client, where: str):
        self.client = client
        self.where = where  # the base URL or "in-process", for error messages

    def slate(self, user_id: str, k: int) -> Slate:
        path = f"/v1/users/{user_id}/recommendations"
        try:
            response = self.client.get(path, params={"k": k})
        except Exception as error:  # httpx raises several kinds (connect, timeout, protocol)
            raise TrafficError(f"{self.where}{path}: request failed: {error}") from None
        if response.status_code != 200:
            raise TrafficError(f"{self.where}{path}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
            items = tuple(str(item["item_id"]) for item in body["items"])
            request_id = str(body["request_id"])
        except (ValueError, KeyError, TypeError) as error:
            raise TrafficError(
                f"{self.where}{path}: not a recommendations answer ({error!r}): {response.text[:200]}"
            ) from None
        return Slate(request_id, items, None, body.get("experiment"), body.get("variant"))


@contextmanager
def in_process_server(settings: Settings, **serving: object) -> Iterator[ServerPolicy]:
    """Serving's app on this home's publications, in this process, once ready (within
    ``traffic_timeout_seconds``); leaving the block stops it (the impression log then seals its files).
    ``serving``: serving settings that differ from the environment's (e.g. ``exploration_epsilon``)."""
    import time

    from fastapi.testclient import TestClient

    from serving.config import ServingSettings, load_settings
    from serving.main import create_app

    app = create_app(load_settings(ServingSettings, **{"home": settings.home, **serving}))
    with TestClient(app) as client:
        deadline = time.monotonic() + settings.traffic_timeout_seconds
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise TrafficError(f"in-process server: no publication became ready under {settings.published_dir}")
            time.sleep(0.05)
        yield ServerPolicy(client, "in-process ")


@contextmanager
def http_server(base_url: str, timeout_seconds: float) -> Iterator[ServerPolicy]:
    import httpx

    with httpx.Client(base_url=base_url, timeout=timeout_seconds) as client:
        yield ServerPolicy(client, base_url)


class ListPolicy:
    """Each user's own list (the first k items), shown as it is: a deterministic policy."""

    def __init__(self, lists: Mapping[str, Sequence[str]], name: str = "list"):
        self.lists = lists
        self.name = name
        self.served = 0

    def _request_id(self) -> str:
        self.served += 1
        return f"{self.name}-{self.served:09d}"

    def slate(self, user_id: str, k: int) -> Slate:
        items = tuple(self.lists[user_id][:k])
        return Slate(self._request_id(), items, (1.0,) * len(items), variant=self.name)


class EpsilonGreedyPolicy(ListPolicy):
    """A list with epsilon exploration over ``catalog`` (see the module docstring), propensities logged."""

    def __init__(
        self,
        lists: Mapping[str, Sequence[str]],
        catalog: Sequence[str],
        epsilon: float,
        rng: np.random.Generator,
        name: str = "explore",
    ):
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        super().__init__(lists, name)
        self.catalog = list(catalog)
        self.epsilon = epsilon
        self.rng = rng

    def slate(self, user_id: str, k: int) -> Slate:
        ranked = list(self.lists[user_id][:k])
        pool = [item for item in self.catalog if item not in set(ranked)]
        if len(pool) < len(ranked):  # too small a catalog to explore, as serving does
            return Slate(self._request_id(), tuple(ranked), (1.0,) * len(ranked), variant=self.name)
        swapped = np.flatnonzero(self.rng.random(len(ranked)) < self.epsilon)
        drawn = self.rng.choice(len(pool), size=len(swapped), replace=False)
        shown = list(ranked)
        propensities = [1.0 - self.epsilon] * len(ranked)
        for slot, index in zip(swapped.tolist(), drawn.tolist(), strict=True):
            shown[slot] = pool[index]
            propensities[slot] = self.epsilon / len(pool)
        return Slate(self._request_id(), tuple(shown), tuple(propensities), variant=self.name)
