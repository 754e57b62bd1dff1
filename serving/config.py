"""Serving settings: where the publications are and how often to look for a new one.

Deliberately separate from pipelines.settings so that the API host installs and imports
nothing of the pipeline stack; both read the same RECFORGE_HOME. The helpers that turn a
rejected setting into one line (``describe_invalid_settings``) live here for the same reason:
pipelines.settings may import serving, never the other way round.
"""

from __future__ import annotations

import datetime
import os
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Literal

import annotated_types
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from serving.events import FUTURE_TOLERANCE_SECONDS, LATE_ARRIVAL_DAYS, MAX_LINE_BYTES
from serving.pseudonyms import PSEUDONYM_KEY, PSEUDONYM_KEY_FILE, PSEUDONYMIZE_USER_IDS, Pseudonymizer, pseudonym_key

ENV_PREFIX = "RECFORGE_"
_Model = typing.TypeVar("_Model", bound=BaseSettings)


class InvalidSettings(ValueError):
    """A setting is outside its valid range; the message is the one line a user sees."""


class ServingSettings(BaseSettings):
    # Floats must be finite: an inf/nan threshold is never what someone meant.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", allow_inf_nan=False)

    home: Path = Path("var")
    reload_interval_seconds: float = Field(
        default=2.0, ge=0.1, le=3600, description="How often the server looks for a new CURRENT publication."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address the API binds (0.0.0.0: every one).")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port the API listens on.")
    access_log: bool = Field(default=False, description="One log line per request (costly at high rates).")
    faiss_threads: int = Field(default=1, ge=1, le=256, description="OpenMP threads per similar-items query.")
    # Requests over these get 431 (head) or 413 (body) and a closed connection (serving.limits).
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Longest request head (request line + headers)."
    )
    max_header_count: int = Field(default=100, ge=10, le=1000, description="Most headers in one request.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=100 * 1024 * 1024, description="Longest request body.")

    # --- the impression log (serving/impressions/): every slate answered, written off the answer path
    impressions_sink: Literal["off", "files", "redis"] = Field(
        default="files",
        description="Where served slates are logged: Parquet landing files under RECFORGE_HOME/landing/impressions/ "
        "(one per interval and process), a Redis Stream (scaled), or nowhere.",
    )
    impressions_interval_seconds: int = Field(
        default=3600, ge=1, le=86400, description="One landing file per this many seconds; must divide a day (86400)."
    )
    impressions_flush_seconds: float = Field(
        default=1.0, ge=0.01, le=60, description="How often the background writer drains the queue of slates."
    )
    impressions_buffer_slates: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="Slates the queue holds; beyond it a slate is dropped and counted, never waited for.",
    )  # fmt: skip
    impressions_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", min_length=1, description="The Redis of the 'redis' impression sink."
    )
    impressions_redis_stream: str = Field(
        default="recforge:impressions", min_length=1, description="The Redis Stream impressions are added to."
    )

    # --- online experiments (serving/variants.py; docs/operations.md, "Experiments")
    exploration_epsilon: float = Field(
        default=0.0, ge=0, lt=1,
        description="Per slot of a recommendations answer, the probability its item is swapped for one drawn "
        "uniformly from the allowed items outside the slate; every shown item's propensity is logged.",
    )  # fmt: skip
    canary_window_requests: int = Field(
        default=2000, ge=10, le=1_000_000,
        description="The latest answers per variant the canary guardrails judge (error rate, p99 latency).",
    )  # fmt: skip
    canary_min_requests: int = Field(
        default=200, ge=1, le=1_000_000,
        description="Answers a canary must have in its window before a guardrail can roll it back.",
    )  # fmt: skip
    canary_max_error_rate: float = Field(
        default=0.01, gt=0, le=1,
        description="Share of a canary's answers that may fail (5xx) before it is rolled back, unless its "
        "declaration sets rollback.max_error_rate.",
    )  # fmt: skip
    canary_max_p99_seconds: float = Field(
        default=0.25, gt=0, le=60,
        description="The canary's p99 answer latency (in this process) beyond which it is rolled back, unless "
        "its declaration sets rollback.max_p99_seconds.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _canary_window_holds_its_minimum(self):
        if self.canary_min_requests > self.canary_window_requests:
            raise ValueError(
                f"{ENV_PREFIX}CANARY_MIN_REQUESTS={self.canary_min_requests} must not exceed "
                f"{ENV_PREFIX}CANARY_WINDOW_REQUESTS={self.canary_window_requests}: the guardrails would never judge"
            )
        return self

    @field_validator("impressions_interval_seconds")
    @classmethod
    def _interval_divides_a_day(cls, seconds: int) -> int:
        if 86400 % seconds:
            raise ValueError("must divide a day into whole intervals (a divisor of 86400 in [1, 86400])")
        return seconds

    # --- the failure log (serving/failures.py; docs/operations.md, "Failed requests")
    failure_log_ids: bool = Field(
        default=True,
        description="Write user and item ids (and the messages that quote them) into the failure log; turn off "
        "where ids are personal data.",
    )
    failure_log_files: int = Field(default=5, ge=1, le=100, description="Files the failure log keeps (rotating).")
    failure_log_file_bytes: int = Field(
        default=10 * 1024 * 1024, ge=4096, le=1024**3, description="Largest size of one failure log file."
    )
    failure_log_queue: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Records waiting for the writer; beyond, they are dropped."
    )
    failure_log_dir: Path | None = Field(
        default=None, description="Where the failure log is written; unset: RECFORGE_HOME/serving/failures."
    )
    # --- the collector (POST /v1/events, serving/collector/): off until an app key is set
    collector_app_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="The key apps send as 'Authorization: Bearer <key>' to POST /v1/events; unset (and no "
        "key file): the collector answers 503. A secret: never logged, set it in .env or use the file.",
    )
    collector_app_key_file: Path | None = Field(
        default=None, description="A file holding the app key (its first line), instead of the variable."
    )
    collector_backend: Literal["segments", "redis"] = Field(
        default="segments",
        description="Where accepted events go: segment files under RECFORGE_HOME/landing/stream/, or a Redis Stream.",
    )
    collector_fsync: bool = Field(
        default=True,
        description="Acknowledge only after fsync (durable across a power loss); false: after write() "
        "(survives a crash of the server, not of the machine).",
    )
    collector_commit_delay_ms: float = Field(
        default=0.0, ge=0, le=100,
        description="Group commit: how long a commit waits for more events before its fsync (0: none; "
        "events arriving during an fsync always share the next one).",
    )  # fmt: skip
    collector_segment_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=4096, le=1 << 32, description="A segment is closed once it holds this many bytes."
    )
    collector_segment_max_seconds: float = Field(
        default=60.0,
        ge=0.5,
        le=86400,
        description="A segment is closed this long after it was opened (and at UTC midnight).",
    )
    collector_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", min_length=1, description="The Redis of the 'redis' collector backend."
    )
    collector_redis_stream: str = Field(default="recforge:events", min_length=1, description="The Redis Stream.")
    collector_redis_group: str = Field(
        default="recforge-ingest", min_length=1, description="The stream's consumer group (created at start)."
    )
    # --- session-aware answers (serving/session.py): each user's latest events, fed by the collector.
    # Kept in this process on the embedded default; in Redis (collector_redis_url) with the 'redis' backend.
    session_max_events: int = Field(
        default=20, ge=1, le=1000, description="Latest events kept per user (older ones are dropped)."
    )
    session_ttl_seconds: float = Field(
        default=1800.0, ge=1, le=7 * 86400, description="A session event older than this no longer counts."
    )
    session_max_users: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="Users whose sessions one server keeps; the least recently active one is dropped beyond it.",
    )  # fmt: skip
    session_weight: float = Field(
        default=0.5, ge=0, le=1,
        description="Share of the session in an answer's score: (1-w) x list score + w x session similarity.",
    )  # fmt: skip
    session_half_life_seconds: float = Field(
        default=600.0, ge=1, le=7 * 86400, description="A session item's pull halves every this many seconds."
    )
    session_anchor_items: int = Field(
        default=5, ge=1, le=50, description="The most recent distinct session items whose neighbours are blended."
    )
    session_redis_prefix: str = Field(
        default="recforge:session:", min_length=1, description="Key prefix of the per-user session lists in Redis."
    )
    # The event contract's settings (serving/events.py), shared with ingest.
    late_arrival_days: int = LATE_ARRIVAL_DAYS
    future_tolerance_seconds: int = FUTURE_TOLERANCE_SECONDS
    ingest_max_line_bytes: int = MAX_LINE_BYTES
    # Pseudonymous user ids (serving/pseudonyms.py), shared with ingest: the API hashes the id it is asked for.
    pseudonymize_user_ids: bool = PSEUDONYMIZE_USER_IDS
    pseudonym_key: SecretStr | None = PSEUDONYM_KEY
    pseudonym_key_file: Path | None = PSEUDONYM_KEY_FILE
    _pseudonym_secret: bytes | None = PrivateAttr(default=None)

    @field_validator("pseudonym_key", "pseudonym_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """An empty variable (as .env.example leaves it) means unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _pseudonym_secret_readable(self):
        self._pseudonym_secret = pseudonym_key(
            self.pseudonymize_user_ids, self.pseudonym_key, self.pseudonym_key_file, ENV_PREFIX
        )
        return self

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The user-id hasher when pseudonymisation is on, else None."""
        return Pseudonymizer(self._pseudonym_secret) if self._pseudonym_secret is not None else None

    @model_validator(mode="after")
    def _app_key_from_file(self):
        """The key file, when named, gives the key (both set: refused, one source of truth)."""
        if self.collector_app_key_file is None:
            return self
        variable = f"{ENV_PREFIX}COLLECTOR_APP_KEY"
        if self.collector_app_key is not None:
            raise ValueError(f"{variable} and {variable}_FILE are both set: set one")
        path = self.collector_app_key_file.expanduser()
        try:
            key = path.read_text().splitlines()[0].strip() if path.stat().st_size else ""
        except OSError as error:
            raise ValueError(f"{variable}_FILE={str(path)!r}: cannot read it ({error.strerror})") from None
        if len(key) < 16:
            raise ValueError(f"{variable}_FILE={str(path)!r}: its first line must hold a key of at least 16 characters")
        self.collector_app_key = SecretStr(key)
        return self

    @property
    def published_dir(self) -> Path:
        return self.home.expanduser().resolve() / "published"

    @property
    def impressions_dir(self) -> Path:
        return self.home.expanduser().resolve() / "landing" / "impressions"

    @property
    def experiment_state_path(self) -> Path:
        """Which experiments run (written by `recforge experiments start|stop`, and by a canary rollback)."""
        from serving.experiments import STATE_FILE

        return self.home.expanduser().resolve() / STATE_FILE

    @property
    def failure_log_path(self) -> Path:
        from serving.failures import DIRECTORY

        if self.failure_log_dir is not None:
            return self.failure_log_dir.expanduser().resolve()
        return self.home.expanduser().resolve() / DIRECTORY

    @property
    def stream_dir(self) -> Path:
        """Where the collector's segments land (the layout is serving.collector.segments')."""
        return self.home.expanduser().resolve() / "landing" / "stream"


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "text",
    SecretStr: "secret text",
    Path: "a path",
    datetime.date: "a date (YYYY-MM-DD)",
    list: "a JSON list",
    dict: "a JSON object",
}
_BOUND_SYMBOLS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _base_type(annotation) -> tuple[object, bool]:
    """The annotation without ``| None``, and whether None (unset) is allowed."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


def valid_range(field: FieldInfo) -> str:
    """What a field accepts, in words, derived from its type and constraints (so it is written once).

    ``an integer >= 1``, ``a finite number in [0, 1]``, ``one of 'duckdb', 'postgres'``.
    """
    annotation, optional = _base_type(field.annotation)
    if typing.get_origin(annotation) is typing.Literal:
        text = "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    else:
        text = _TYPE_NAMES.get(typing.get_origin(annotation) or annotation, getattr(annotation, "__name__", "a value"))
        bounds = {
            symbol: getattr(item, attr)
            for item in field.metadata
            for kind, attr, symbol in _BOUND_SYMBOLS
            if isinstance(item, kind)
        }
        lower = next(((s, bounds[s]) for s in (">=", ">") if s in bounds), None)
        upper = next(((s, bounds[s]) for s in ("<=", "<") if s in bounds), None)
        if lower and upper:
            text += f" in {'[' if lower[0] == '>=' else '('}{lower[1]}, {upper[1]}{']' if upper[0] == '<=' else ')'}"
        elif lower or upper:
            text += f" {' '.join(str(x) for x in (lower or upper))}"
        lengths = [item.min_length for item in field.metadata if isinstance(item, annotated_types.MinLen)]
        if lengths:
            text = f"non-empty {text}" if lengths[0] == 1 else f"{text} of at least {lengths[0]}"
    return f"{text}, or unset" if optional else text


def describe_invalid_settings(error: ValidationError, model: type[BaseSettings]) -> str:
    """One line naming each rejected setting by its environment variable, its value and its valid range.

    A field's own validator words its rule in its error message; every other rule is derived from
    the field's type and constraints (``valid_range``). Cross-field rules (no location) speak for
    themselves.
    """
    prefix = model.model_config.get("env_prefix", "")
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"] or item["loc"][0] not in model.model_fields:
            problems.append(message)
            continue
        name = str(item["loc"][0])
        rule = message if item["type"] == "value_error" else f"must be {valid_range(model.model_fields[name])}"
        secret = _base_type(model.model_fields[name].annotation)[0] is SecretStr
        shown = "<hidden>" if secret else repr(item["input"])  # a secret, even a wrong one, is never shown
        problems.append(f"{prefix}{name}".upper() + f"={shown}: {rule}")
    plural = "s" if len(problems) > 1 else ""
    return f"invalid setting{plural}: " + "; ".join(dict.fromkeys(problems))


def load_settings(model: type[_Model], **values) -> _Model:
    """``model(**values)``, with a rejected setting raised as one line (InvalidSettings) instead of
    pydantic's multi-line report: the CLI, the API server and DAG files all show that line."""
    try:
        return model(**values)
    except ValidationError as error:
        raise InvalidSettings(describe_invalid_settings(error, model)) from None
    except SettingsError as error:  # a JSON-valued variable that is not JSON: no ValidationError to read
        found = re.search(r'field "(\w+)"', str(error))
        if not found or found.group(1) not in model.model_fields:
            raise InvalidSettings(f"invalid settings: {error}") from None
        name = found.group(1)
        variable = f"{model.model_config.get('env_prefix', '')}{name}".upper()
        raise InvalidSettings(
            f"invalid setting: {variable}={os.environ.get(variable)!r}: must be {valid_range(model.model_fields[name])}"
        ) from None


def settings_without_app_key(home: Path) -> ServingSettings:
    """The server's settings for `home` minus its app key, for those that read where the collector puts
    events (the micro-batch ingest and its DAG): they never need the key, so a host without the key
    file (an Airflow worker) reads them without error."""
    return load_settings(ServingSettings, home=home, collector_app_key=None, collector_app_key_file=None)


@lru_cache
def get_settings() -> ServingSettings:
    return load_settings(ServingSettings)
