"""Routing requests to experiment variants: which publication answers a user, and the canary's guardrails.

The state file (serving.experiments.STATE_FILE) says which experiments run and which publication
version answers for each variant. On the store's watcher thread, never on a request, the router
reads it when it changes, loads and verifies every variant's publication (as CURRENT is verified;
a variant on CURRENT's version shares CURRENT's arrays), lays out each experiment's shares for
now (a canary ramps on its schedule) and swaps in an immutable routing table with one assignment.
A request then costs one salted hash per running experiment (serving.experiments.bucket):

- a user a variant takes is answered from that variant's publication;
- a holdback user gets the popularity fallback of the live publication;
- a user no experiment takes (shares below 1, or no experiment) gets CURRENT, as without experiments.

With several experiments running, they are tried in name order and the first that takes the user
decides (each hashes with its own name and salt, so they stay independent of each other).

Anything wrong in the state (unreadable JSON, shares above 1, a variant whose version is missing or
fails verification) is logged as one line, counted (``recforge_experiment_state_problems``), shown
by ``/experimentz``, and only that experiment (or, for an unreadable file, every one) is left out:
its users get CURRENT. The server never fails for an experiment.

The canary's guardrails are measured here, per process: each answer of the canary variant adds its
latency and whether it failed (5xx, recorded by serving.metrics.MetricsMiddleware) to a window of
the latest ``canary_window_requests``. Once the window holds ``canary_min_requests``, an error rate
or p99 latency beyond the declared limits (or the settings' defaults) rolls the canary back: its
share becomes 0, written into the state file (so every replica, and this one after a restart, agrees
within one reload interval), logged, and counted (``recforge_canary_rollbacks_total``).
``recforge experiments status`` shows it.

The CTR guardrail (``max_ctr_drop``, declared per canary) is judged here too, from the outcomes the
collector receives: each canary or control slate this process serves is remembered by its request id
(the latest ``canary_window_requests`` per arm), and a ``click`` event posted to ``/v1/events`` with
that ``request_id`` in its context marks the slate clicked (the slate_items mart's ``clicked``). Once
both arms hold ``canary_min_requests`` slates, the canary is rolled back when its share of clicked
slates is significantly below ``(1 - max_ctr_drop)`` x the control's (one-sided z-test at 1%, so a
noisy window does not roll back a good canary). With several replicas, a click that reaches another
replica than the one that served its slate is not counted; routing that ignores the arm loses the
same share of both arms' clicks, which leaves their ratio as it is. The daily readout judges the
experiment's declared guardrails on every impression and outcome.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from serving.events import OUTCOME_REQUEST_ID
from serving.experiments import (
    HOLDBACK,
    RUNNING,
    STATE_FILE,
    ExperimentStateError,
    RunningExperiment,
    bucket,
    running_experiments,
    update_state_file,
    variant_at,
)
from serving.publication import Publication, arms_json

log = logging.getLogger(__name__)

ROLLBACKS = "recforge_canary_rollbacks_total"
VARIANT_MEMORY = "recforge_variant_memory_bytes"
STATE_PROBLEMS = "recforge_experiment_state_problems"
ERROR_RATE, P99, CTR_DROP = "error_rate", "p99_latency", "ctr_drop"  # the guardrails a server judges
CTR_Z = 2.326  # one-sided z at 1%: how far below the allowed floor a canary's click-through must be
CLICK = b"click"  # the outcome the CTR guardrail counts (serving.events.EVENT_TYPES; the mart's `clicked`)
_OUTCOME_KEY = OUTCOME_REQUEST_ID.encode()  # a line without it names no slate: skipped before parsing


class CanaryMonitor:
    """The latest answers of one canary: latency and failure, appended from the event loop (deque.append is
    atomic) and judged on the watcher thread from a copy (deque.copy is one C call under the GIL)."""

    def __init__(self, window: int):
        self.latencies: deque[float] = deque(maxlen=window)
        self.failures: deque[bool] = deque(maxlen=window)

    def observe(self, seconds: float, failed: bool) -> None:
        self.latencies.append(seconds)
        self.failures.append(failed)

    def breach(self, min_requests: int, max_error_rate: float, max_p99_seconds: float) -> tuple[str, str] | None:
        """(guardrail, why) when the window breaks a limit, else None (also while it holds too few answers)."""
        latencies, failures = self.latencies.copy(), self.failures.copy()
        if min(len(latencies), len(failures)) < min_requests:
            return None
        rate = sum(failures) / len(failures)
        if rate > max_error_rate:
            return ERROR_RATE, f"error rate {rate:.2%} over the last {len(failures)} answers > {max_error_rate:.2%}"
        p99 = float(np.quantile(np.fromiter(latencies, dtype=np.float64), 0.99))
        if p99 > max_p99_seconds:
            limit = max_p99_seconds * 1000
            return P99, f"p99 latency {p99 * 1000:.1f} ms over the last {len(latencies)} answers > {limit:.1f} ms"
        return None


class SlateClicks:
    """The latest slates one process served to each judged arm (a canary and its control), by request id,
    and which of them a click came back for. Written on the event loop only (answers and the collector);
    the watcher thread reads two integers per arm."""

    def __init__(self, window: int):
        self.window = window
        self.slates: dict[str, deque[bytes]] = {}  # arm -> request ids, oldest first
        self.shown: dict[str, int] = {}
        self.clicked: dict[str, int] = {}
        self._arm_of: dict[bytes, list] = {}  # request id -> [arm, clicked]

    def served(self, arm: str, request_id: bytes) -> None:
        slates = self.slates.setdefault(arm, deque())
        if len(slates) == self.window:
            oldest = self._arm_of.pop(slates.popleft(), None)
            if oldest is not None and oldest[1]:
                self.clicked[arm] -= 1
        slates.append(request_id)
        self._arm_of[request_id] = [arm, False]
        self.shown[arm] = len(slates)
        self.clicked.setdefault(arm, 0)

    def click(self, request_id: bytes) -> bool:
        """Mark the slate of `request_id` clicked (once); False for a slate this process does not hold."""
        slate = self._arm_of.get(request_id)
        if slate is None or slate[1]:
            return False
        slate[1] = True
        self.clicked[slate[0]] += 1
        return True

    def breach(self, canary: str, control: str, min_slates: int, max_drop: float) -> tuple[str, str] | None:
        """(CTR_DROP, why) when the canary's click-through is significantly below (1 - max_drop) x the control's."""
        n_canary, n_control = self.shown.get(canary, 0), self.shown.get(control, 0)
        if min(n_canary, n_control) < min_slates:
            return None
        ctr_canary, ctr_control = self.clicked[canary] / n_canary, self.clicked[control] / n_control
        floor = (1 - max_drop) * ctr_control
        variance = (
            ctr_canary * (1 - ctr_canary) / n_canary + (1 - max_drop) ** 2 * ctr_control * (1 - ctr_control) / n_control
        )
        if ctr_canary >= floor or (variance > 0 and (ctr_canary - floor) / variance**0.5 > -CTR_Z):
            return None
        return CTR_DROP, (
            f"click-through {ctr_canary:.2%} over the last {n_canary} slates < {1 - max_drop:.0%} of the control's "
            f"{ctr_control:.2%} ({n_control} slates), significant at 1%"
        )


@dataclass(frozen=True)
class Arm:
    """One group of one running experiment: what answers its users and what the answer says."""

    experiment: str
    variant: str
    publication: Publication | None  # None: the holdback (the live publication's fallback list)
    arms: bytes  # the answer's experiment and variant fields (serving.publication.with_arms)
    shadows: tuple[tuple[str, Publication], ...] = ()
    monitor: CanaryMonitor | None = None  # the canary's guardrail window; None for every other arm
    clicks: SlateClicks | None = None  # the canary's and the control's slates when max_ctr_drop is declared


@dataclass(frozen=True)
class _Live:
    name: str
    salt: str
    shares: tuple[tuple[str, float], ...]
    arms: dict[str, Arm]


@dataclass
class _Facts:
    """What /experimentz shows of one running experiment."""

    shares: dict[str, float]
    rolled_back: dict | None
    variants: list[dict] = field(default_factory=list)
    problem: str | None = None


class ExperimentRouter:
    def __init__(self, settings, registry: CollectorRegistry):
        self.state_path: Path = settings.experiment_state_path
        self.settings = settings
        self.routes: tuple[_Live, ...] = ()  # read by every request; replaced whole
        self.problems: list[str] = []  # what /experimentz and the gauge show: the state's and the variants'
        self._state_problems: list[str] = []
        self._facts: dict[str, _Facts] = {}
        self._running: list[RunningExperiment] = []
        self._stamp: tuple | None = None
        self._held: dict[str, Publication] = {}  # version -> loaded publication of a variant
        self._refused: dict[str, str] = {}  # version -> why it was refused (retried when the state changes)
        self._monitors: dict[tuple[str, str], CanaryMonitor] = {}
        self._clicks: dict[str, SlateClicks] = {}  # experiment -> its CTR guardrail's slates
        self.counting_clicks = False  # any SlateClicks in the routes: the collector looks for clicks
        self._lock = threading.Lock()  # one refresh at a time (the watcher's and a test's)
        self.rollbacks = Counter(
            ROLLBACKS, "Canaries rolled back by this server, by guardrail", ["experiment", "variant", "guardrail"],
            registry=registry,
        )  # fmt: skip
        self.memory = Gauge(
            VARIANT_MEMORY, "Memory held for each running variant's publication (0 when it shares CURRENT's)",
            ["experiment", "variant", "version"], registry=registry,
        )  # fmt: skip
        Gauge(STATE_PROBLEMS, "Running experiments (or the state file) the server cannot route", registry=registry
              ).set_function(lambda: len(self.problems))  # fmt: skip

    # --- the request path

    def route(self, user_id: str) -> Arm | None:
        """The arm that answers `user_id`, or None: the live publication, as without experiments."""
        for live in self.routes:
            arm = variant_at(bucket(user_id, live.name, live.salt), live.shares)
            if arm is not None:
                return live.arms[arm]
        return None

    def observe_outcomes(self, lines: list[bytes]) -> int:
        """Clicks among the collector's accepted event lines, credited to the slates they name; returns how many."""
        found = 0
        for line in lines:
            if CLICK not in line or _OUTCOME_KEY not in line:
                continue
            event = orjson.loads(line)
            request_id = (event.get("context") or {}).get(OUTCOME_REQUEST_ID)
            if event.get("event_type") != CLICK.decode() or not isinstance(request_id, str):
                continue
            key = request_id.encode()
            found += any(clicks.click(key) for clicks in self._clicks.values())
        return found

    # --- the watcher thread

    def refresh(self, store, now: datetime | None = None) -> None:
        """Re-read the state if it changed, (re)load variants, lay out today's shares, judge the canaries."""
        with self._lock:
            now = now or datetime.now(UTC)
            self._read_state_if_changed()
            self._judge_canaries(now)
            self._build(store, now)

    def _read_state_if_changed(self) -> None:
        try:
            stat = os.stat(self.state_path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._refused.clear()  # a new state may name versions published since
        try:
            self._running, problems = running_experiments(self.state_path, STATE_FILE)
            problems = [f"{p}: its users get the live publication" for p in problems]
        except ExperimentStateError as error:
            self._running, problems = [], [f"{error}: every user gets the live publication"]
        self._state_problems = problems
        running = {e.name for e in self._running if e.rolled_back is None}
        self._monitors = {key: m for key, m in self._monitors.items() if key[0] in running}  # stopped: forgotten
        self._clicks = {name: c for name, c in self._clicks.items() if name in running}
        for problem in problems:
            log.error("experiments: %s", problem)
        if self._running:
            log.info("experiments: running %s", ", ".join(e.name for e in self._running))

    def _build(self, store, now: datetime) -> None:
        live = store.current
        routes, facts, needed = [], {}, {}
        problems = list(self._state_problems)
        for experiment in self._running:
            if not experiment.active(now):
                continue
            shares = experiment.shares(now)
            info = _Facts({arm: share for arm, share in shares}, experiment.rolled_back)
            facts[experiment.name] = info
            publications = {}
            for variant, version in experiment.publications.items():
                publication = self._publication(store, version)
                if publication is None:
                    info.problem = (
                        f"experiment {experiment.name!r}: variant {variant!r}: publication {version} "
                        f"{self._refused[version]}: its users get the live publication"
                    )
                    break
                publications[variant] = publication
            if info.problem is not None:
                problems.append(info.problem)
                continue
            needed.update({p.version: p for p in publications.values()})
            shadows = tuple((v, publications[v]) for v in experiment.assignment.shadow)
            arms = {}
            canary, control = experiment.assignment.canary, experiment.assignment.control
            clicks = None
            if canary is not None and experiment.rolled_back is None and "max_ctr_drop" in experiment.limits:
                clicks = self._clicks.setdefault(experiment.name, SlateClicks(self.settings.canary_window_requests))
            for arm, _ in shares:
                monitor = None
                if arm == canary and experiment.rolled_back is None:
                    key = (experiment.name, arm)
                    monitor = self._monitors.setdefault(key, CanaryMonitor(self.settings.canary_window_requests))
                arms[arm] = Arm(experiment.name, arm, publications.get(arm) if arm != HOLDBACK else None,
                                arms_json(experiment.name, arm), shadows, monitor,
                                clicks if arm in (canary, control) else None)  # fmt: skip
            for variant, publication in publications.items():
                shared = live is not None and publication is live
                info.variants.append({
                    "variant": variant, "version": publication.version,
                    "shadow": variant in experiment.assignment.shadow,
                    "memory_bytes": publication.memory_bytes, "shares_live_publication": shared,
                })  # fmt: skip
            routes.append(_Live(experiment.name, experiment.assignment.salt, tuple(shares), arms))
        for problem in problems[len(self._state_problems) :]:
            if problem not in self.problems:
                log.error("experiments: %s", problem)
        self.problems = problems
        self._held = needed
        self._facts = facts
        self.routes = tuple(routes)  # one assignment: a request sees the old table or the new one
        self.counting_clicks = any(arm.clicks is not None for live in routes for arm in live.arms.values())
        self.memory.clear()
        for name, info in facts.items():
            for variant in info.variants:
                held = 0 if variant["shares_live_publication"] else variant["memory_bytes"]
                self.memory.labels(name, variant["variant"], variant["version"]).set(held)

    def _publication(self, store, version: str) -> Publication | None:
        """The verified publication of `version`: CURRENT's when it is that version, one already held, or loaded now."""
        live = store.current
        if live is not None and live.version == version:
            return live
        if version in self._held:
            return self._held[version]
        if version in self._refused:
            return None
        try:
            publication = store.load_version(version)
        except Exception as error:  # a variant that cannot load must never take the server down
            self._refused[version] = f"refused: {store.relative(str(error))}"
            return None
        log.info(
            "experiments: variant publication %s loaded: %d users, %.0f MB held, in %.1fs",
            version, publication.n_users, publication.memory_bytes / 1e6, publication.load_seconds,
        )  # fmt: skip
        self._held[version] = publication
        return publication

    def _judge_canaries(self, now: datetime) -> None:
        settings = self.settings
        for experiment in self._running:
            canary = experiment.assignment.canary
            monitor = self._monitors.get((experiment.name, canary))
            if canary is None or experiment.rolled_back is not None or monitor is None:
                continue
            breach = monitor.breach(
                settings.canary_min_requests,
                experiment.limits.get("max_error_rate", settings.canary_max_error_rate),
                experiment.limits.get("max_p99_seconds", settings.canary_max_p99_seconds),
            )
            clicks = self._clicks.get(experiment.name)
            if breach is None and clicks is not None:
                control, max_drop = experiment.assignment.control, experiment.limits["max_ctr_drop"]
                breach = clicks.breach(canary, control, settings.canary_min_requests, max_drop)
            if breach is not None:
                self._roll_back(experiment, canary, *breach, now)

    def _roll_back(self, experiment: RunningExperiment, canary: str, guardrail: str, why: str, now: datetime) -> None:
        record = {"variant": canary, "at": now.isoformat(), "guardrail": guardrail, "reason": why,
                  "by": f"serving pid {os.getpid()}"}  # fmt: skip

        def mark(state: dict) -> bool:
            entry = state.get(experiment.name)
            if not isinstance(entry, dict) or entry.get("status") != RUNNING or entry.get("rollback"):
                return False  # stopped meanwhile, or another replica was first
            entry["rollback"] = record
            return True

        # Here first, then on disk: this server stops routing to the canary (and counts it) before the slower
        # write, so whoever sees the rollback in the state file also sees it in this server's metrics.
        index = self._running.index(experiment)
        self._running[index] = RunningExperiment(
            experiment.assignment, experiment.publications, experiment.start, experiment.end, experiment.limits, record
        )
        self._monitors.pop((experiment.name, canary), None)
        self._clicks.pop(experiment.name, None)
        self.rollbacks.labels(experiment.name, canary, guardrail).inc()
        try:
            update_state_file(self.state_path, mark)
        except (OSError, ExperimentStateError) as error:  # rolled back here anyway; the others judge for themselves
            log.error("experiments: could not record the rollback of %s in %s: %s", canary, STATE_FILE, error)
        log.error("experiments: canary %s of %s ROLLED BACK (share 0): %s", canary, experiment.name, why)

    # --- status

    def status(self) -> dict:
        """What /experimentz answers: each running experiment's shares, rollback and variants' memory."""
        facts = self._facts
        held = sum(v["memory_bytes"] for f in facts.values() for v in f.variants if not v["shares_live_publication"])
        return {
            "experiments": {
                name: {"shares": f.shares, "rolled_back": f.rolled_back, "variants": f.variants}
                for name, f in facts.items()
            },
            "variant_memory_bytes": held,
            "problems": list(self.problems),
        }
