"""The one settings object of recforge.

Every path and threshold the pipeline uses comes from here, read from environment
variables prefixed ``RECFORGE_`` (for example ``RECFORGE_HOME=/data/recforge``).
The embedded default keeps everything under ``RECFORGE_HOME`` (default ``./var``);
the scaled-out configuration changes URLs, never code.
"""

from __future__ import annotations

import json
import re
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.contract import EVENT_TYPES
from serving.config import InvalidSettings, load_settings
from serving.config import describe_invalid_settings as describe_for
from serving.events import FUTURE_TOLERANCE_SECONDS, LATE_ARRIVAL_DAYS, MAX_LINE_BYTES
from serving.format import MAX_TOP_N
from serving.pseudonyms import PSEUDONYM_KEY, PSEUDONYM_KEY_FILE, PSEUDONYMIZE_USER_IDS, Pseudonymizer, pseudonym_key

REPO_ROOT = Path(__file__).resolve().parent.parent

# What DuckDB's memory_limit accepts: a number and a unit.
MEMORY_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*(B|bytes|[KMGT]i?B)\s*", re.IGNORECASE)

# Event type -> the setting (and dbt var) holding its signal weight in the marts.
SIGNAL_WEIGHT_SETTINGS = {event_type: f"weight_{event_type}" for event_type in EVENT_TYPES}


class Settings(BaseSettings):
    # Every field states its valid range (Field bounds, Literal, a validator); floats must be finite.
    # tests/test_settings.py refuses a numeric field without a bound.
    model_config = SettingsConfigDict(env_prefix="RECFORGE_", extra="ignore", allow_inf_nan=False)

    home: Path = Field(default=Path("var"), description="Root of everything the embedded default writes.")

    # --- external services (embedded defaults; the scaled configuration overrides these URLs)
    mlflow_tracking_uri: str | None = Field(
        default=None, min_length=1, description="Defaults to SQLite under RECFORGE_HOME/mlflow."
    )
    dbt_target: Literal["duckdb", "postgres"] = Field(
        default="duckdb",
        description="The warehouse of every stage: dbt's profiles.yml output and pipelines.warehouse.connection's.",
    )
    pg_host: str = Field(default="127.0.0.1", min_length=1)
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_user: str = Field(default="root", min_length=1)
    pg_password: str = ""
    pg_database: str = Field(default="recforge", min_length=1)
    mlflow_experiment: str = Field(default="recforge", min_length=1)
    registered_model_name: str = Field(default="recforge-recommender", min_length=1)

    # --- simulator (the demo data recforge generates itself)
    sim_seed: int = Field(default=42, ge=0, lt=2**32)  # numpy seeds are unsigned 32-bit
    sim_users: int = Field(default=1500, ge=1)
    sim_items: int = Field(default=600, ge=1)
    sim_categories: int = Field(default=12, ge=1)
    sim_days: int = Field(default=28, ge=1)
    sim_start_date: date = date(2026, 1, 1)
    sim_duplicate_share: float = Field(default=0.01, ge=0, le=1)
    sim_malformed_share: float = Field(default=0.005, ge=0, le=1)
    sim_retry_share: float = Field(
        default=0.002, ge=0, le=1, description="Client retries: same action, new id, 300 ms later."
    )
    sim_late_share: float = Field(
        default=0.002, ge=0, le=1, description="Events delivered in the file of two days later."
    )
    sim_bot_users: int = Field(default=3, ge=0)
    sim_shift: Literal["none", "taste", "new_items"] = Field(
        default="none",
        description="A distribution shift from sim_shift_day on: new user tastes, or a wave of new items.",
    )
    sim_shift_day: int = Field(default=14, ge=0, description="Day (from sim_start_date) the shift begins.")
    sim_engine: Literal["sessions", "columns"] = Field(
        default="sessions",
        description="How the simulator draws events: 'sessions' one session at a time (the demo's log), 'columns' "
        "a day's sessions as numpy columns (the same mechanics, a different log for a seed; production sizes).",
    )

    # --- the traffic simulator (pipelines/traffic/): the simulated users meet the live server
    traffic_base_url: str | None = Field(
        default=None,
        min_length=1,
        description="The server `recforge simulate-traffic` asks (http(s)://host:port); unset: serving's app "
        "in-process on this home's publications.",
    )
    traffic_seed: int = Field(default=7, ge=0, lt=2**32, description="Seed of who visits, what they click and buy.")
    traffic_days: int = Field(default=1, ge=1, le=30, description="Simulated days of visits per run.")
    traffic_visit_rate: float = Field(
        default=1.0,
        gt=0,
        le=20,
        description="Visits per user and day, as a multiple of the user's activity in the simulated log.",
    )
    traffic_k: int = Field(default=10, ge=1, le=MAX_TOP_N, description="Items each visit asks the server for.")
    traffic_position_bias: float = Field(
        default=1.0,
        ge=0,
        le=5,
        description="Examination probability at position p is 1 / p^this (0: every position is looked at).",
    )
    traffic_click_scale: float = Field(
        default=0.08,
        gt=0,
        le=10,
        description="How quickly a user's affinity to an item turns into a click once the item is looked at.",
    )
    traffic_cart_share: float = Field(default=0.3, ge=0, le=1, description="Share of clicks that add to the cart.")
    traffic_purchase_share: float = Field(
        default=0.5, ge=0, le=1, description="Share of add-to-carts of an in-stock item that are bought."
    )
    traffic_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="How long one request to the server may take."
    )
    # the A/B demo `recforge run` ends with (pipelines/runtime/ab_demo.py)
    demo_experiment: bool = Field(
        default=True,
        description="After publishing, `recforge run` starts a short A/B (champion vs the popularity holdback), "
        "sends simulated traffic through the server in-process, ingests it and prints the readout.",
    )
    demo_experiment_holdback: float = Field(
        default=0.5, gt=0, lt=1, description="Share of the demo A/B's users in the popularity holdback."
    )

    # --- scheduling of the daily ingest DAG (read by dags/recforge_ingest.py)
    ingest_start_date: date = Field(default=date(2026, 1, 1), description="First data interval of recforge_ingest.")
    ingest_end_date: date | None = Field(default=None, description="Last day to ingest (inclusive); open if unset.")
    ingest_catchup: bool = Field(default=False, description="Let the scheduler run every missed day (a backfill).")
    airflow_db_lock_timeout_seconds: float = Field(
        default=60, ge=1, le=3600,
        description="How long an embedded Airflow process waits for SQLite's write lock (held by the others).",
    )  # fmt: skip

    # --- micro-batches of the collector's segments (read by dags/recforge_stream_ingest.py)
    stream_ingest_cron: str = Field(
        default="*/5 * * * *",
        description="How often recforge_stream_ingest ingests closed segments, in UTC; empty: only when triggered.",
    )

    train_cron: str = Field(
        default="0 4 * * 1", description="Scheduled retraining (besides drift), in UTC; empty: on drift only."
    )

    # --- ingestion
    bot_max_events_per_minute: int = Field(
        default=30, ge=1, description="A user with more events than this in any one minute is quarantined as a bot."
    )
    # The event window and line limit, declared once with the event contract (the collector applies them too).
    late_arrival_days: int = LATE_ARRIVAL_DAYS
    future_tolerance_seconds: int = FUTURE_TOLERANCE_SECONDS
    ingest_max_line_bytes: int = MAX_LINE_BYTES

    warehouse_memory_limit: str = Field(
        default="4GB", description="DuckDB's memory limit (ingest and dbt); beyond it DuckDB spills to disk."
    )
    dbt_tests_scope: Literal["changed_rows", "all"] = Field(
        default="changed_rows",
        description="Which rows a build's data tests check on the event-grain models (their meta.tests_scope): "
        "changed_rows = those that can have changed since the last build that passed every test with the same "
        "project and settings (every row after a full refresh or any change; dbt_project/macros/tests/"
        "changed_rows.sql); all = every row, every build.",
    )
    datasets_dir: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data",
        description="Public data sets (MovieLens) read by tests and benchmarks; never copied into the repo.",
    )

    # --- transformation
    test_days: int = Field(default=7, ge=1, description="Days at the end of the log held out as the test window.")
    valid_days: int = Field(default=7, ge=1, description="Days before the test window that form the validation window.")
    decay_half_life_days: float = Field(
        default=14.0, gt=0, description="Time decay: an interaction this many days old counts half (dbt and folds)."
    )
    # Signal strength per event type: dbt's signal_weight macro gives marts.interaction_events its weight column.
    weight_view: float = Field(ge=0, default=1.0, description="Signal weight of a view (finite, >= 0).")
    weight_click: float = Field(ge=0, default=2.0, description="Signal weight of a click (finite, >= 0).")
    weight_add_to_cart: float = Field(ge=0, default=4.0, description="Signal weight of an add_to_cart (finite, >= 0).")
    weight_purchase: float = Field(ge=0, default=8.0, description="Signal weight of a purchase (finite, >= 0).")
    weight_rating: float = Field(ge=0, default=1.0, description="Signal weight of a rating (finite, >= 0).")
    session_gap_minutes: int = Field(default=30, ge=1, description="Inactivity that ends a session (int_sessions).")
    bot_max_events_per_day: int = Field(
        default=2000, ge=1, description="More behavioural events than this on one day marks a user as a bot (dbt)."
    )
    # --- impressions (issue 16): outcomes are joined to served slates in marts.slate_items
    attribution_window_hours: int = Field(
        default=24, ge=1, le=24 * 30,
        description="An outcome counts for a shown item when it carries the slate's request_id and happens "
        "within this many hours of the answer (dbt var of marts.slate_items).",
    )  # fmt: skip

    # --- drift (compare the latest window with the window of the last retraining)
    drift_window_days: int = Field(default=7, ge=1)
    # Jensen-Shannon in bits and shares lie in [0, 1]; a threshold outside can never or always fire.
    drift_max_event_type_js: float = Field(
        default=0.02, ge=0, le=1, description="Jensen-Shannon (bits) of the event-type mix."
    )
    drift_max_item_popularity_js: float = Field(
        default=0.15, ge=0, le=1, description="Jensen-Shannon (bits) of item shares."
    )
    drift_max_user_activity_psi: float = Field(default=0.2, ge=0, description="PSI of events-per-user bins.")
    drift_max_new_item_share: float = Field(
        default=0.15, ge=0, le=1, description="Share of events on items the baseline lacks."
    )
    drift_max_new_user_share: float = Field(
        default=0.3, ge=0, le=1, description="Share of events by users the baseline lacks."
    )

    # --- validation
    max_duplicate_share: float = Field(
        default=0.05, ge=0, le=1, description="Critical: duplicate share of a raw batch."
    )
    max_bot_share: float = Field(
        default=0.15, ge=0, le=1, description="Warning: share of a raw batch quarantined as bots."
    )
    mart_row_count_band: float = Field(
        default=0.5, ge=0, description="Marts may change by at most this fraction of the previous run's row count."
    )

    # --- training and evaluation
    eval_k: int = Field(default=10, ge=1)
    recall_k: int = Field(default=50, ge=1)
    als_factors: int = Field(default=64, ge=1, le=4096)
    als_iterations: int = Field(default=20, ge=1)
    als_regularization: float = Field(default=0.05, ge=0)
    als_alpha: float = Field(default=20.0, gt=0, description="Confidence scaling of implicit feedback.")
    # --- item cold start through content (models/content.py: the als_content candidate)
    als_content_encoder: Literal["auto", "tfidf", "sentence"] = Field(
        default="auto",
        description="Item text encoder of als_content: tfidf; sentence adds the packaged all-MiniLM-L6-v2 "
        "(the optional 'content' extra); auto adds it only where that package is installed.",
    )
    als_content_map_regularization: float = Field(
        default=0.1, gt=0, le=1e6, description="Ridge penalty of the map from item content to ALS item factors."
    )
    promotion_min_lift: float = Field(
        default=0.0,
        ge=0,
        description="A challenger must beat the champion's NDCG@10 x (1 + this lift), both measured on the same "
        "backtest folds; strictly, unless promotion_allow_tie.",
    )
    promotion_allow_tie: bool = Field(
        default=False,
        description="Tie policy of the gate. Off: a challenger that only equals the bar (an identical retrain on "
        "the same folds) keeps the champion. On: at equal scores the fresher model replaces the champion.",
    )
    promotion_requires_experiment_win: bool = Field(
        default=False,
        description="On: the gate promotes a challenger only if the latest experiment readout with that model "
        "version as a variant said ship, with it the winner (the tags pipelines/experiments/registry_tags.py sets).",
    )

    # --- evaluation, candidates and the promotion gate (models/evaluation, pipelines/training/)
    train_candidates: list[str] = Field(
        default=[
            "ease",
            "itemknn_bm25",
            "als",
            "als_content",
            "bpr",
            "popularity_recent",
            "popularity",
            "sasrec",
            "ranker",
        ],
        description="Registered model names (models.base._REGISTRY) trained and compared at each training; "
        "by default every algorithm, each of which refuses (with its reason, on the training run) when the data "
        "cannot support it; on a tie the earlier name wins. "
        'JSON in the environment, e.g. RECFORGE_TRAIN_CANDIDATES=\'["popularity","als"]\'.',
    )
    train_model_params: dict[str, dict] = Field(
        default={},
        description='Per-model constructor overrides by model name, e.g. {"als": {"factors": 32}}; otherwise a '
        "model's parameter p comes from the setting <name>_<p> when there is one, else the class default.",
    )
    train_random_state: int = Field(default=42, ge=0, lt=2**32, description="Seed given to every candidate model.")
    eval_split: Literal["global_time", "leave_last_n", "random_ratio"] = Field(
        default="global_time",
        description="Split strategy of evaluation and training: global time cutoffs (no user sees anyone's "
        "future; the default), per-user leave-last-n, or seeded random ratio (docs/architecture.md).",
    )
    backtest_folds: int = Field(default=3, ge=1, description="Rolling cutoffs (global_time) or seeds (random_ratio).")
    backtest_step_days: float | None = Field(
        default=None, gt=0, description="Days between rolling cutoffs; defaults to test_days (disjoint windows)."
    )
    eval_leave_last_n: int = Field(default=1, ge=1, description="Items held out per user by leave_last_n.")
    eval_random_ratio: float = Field(default=0.2, gt=0, lt=1, description="Share of pairs held out by random_ratio.")
    eval_new_item_days: float = Field(
        default=7.0, gt=0, description="An item is new if its first event is within this many days before the cutoff."
    )
    eval_max_users: int = Field(
        default=50_000,
        ge=50,
        le=10_000_000,
        description="Evaluation scores at most this many test users per fold: a fold with more is scored on a "
        "seeded uniform sample of them, each accuracy metric reported with its standard error over users "
        "(<metric>_se). At least 50 so that the standard error means something.",
    )
    eval_sample_seed: int = Field(
        default=7, ge=0, lt=2**32, description="Seed of evaluation's user sample (fold j draws with seed + j)."
    )
    train_final_warm_sweeps: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="The final fit on the whole log of a model that can carry on from an earlier fit (ALS) starts "
        "from its fit on the newest backtest fold and runs this many sweeps (at most its iterations) instead of "
        "its iterations from scratch; 0 = from scratch. benchmarks/warm_start.py measures the quality this keeps.",
    )
    train_fold_warm_sweeps: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="The fit of a model that can carry on from an earlier fit (ALS) on the newest backtest fold starts "
        "from the last training's fit on its newest fold, when that fit's cutoff is at or before this fold's and at "
        "most test_days earlier (so it never saw the test window), and runs this many sweeps (at most its "
        "iterations) instead of its iterations from scratch; 0 = from scratch, and no fold fit is kept "
        "(pipelines/training/fold_fits.py).",
    )
    train_blas_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="BLAS threads of training and evaluation (EASE's solve, scoring), set once where they start; "
        "unset = the BLAS library's own default (all cores). Fits by implicit always run BLAS single-threaded "
        "under implicit's own threads (models/factorization.py).",
    )
    cold_user_below: int = Field(
        default=5,
        ge=1,
        description="Cold users have fewer distinct training items: their own evaluation segment, and "
        "the cold-user popularity blend in the lists (evaluated and published alike).",
    )
    segment_power_above: int = Field(default=50, ge=1, description="Power users have more distinct training items.")
    eval_head_share: float = Field(
        default=0.01, gt=0, le=1, description="Top share of items by popularity that popularity bias counts."
    )
    gate_max_cold_ndcg_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Guardrail: cold-segment NDCG@10 may fall at most this share below the champion's.",
    )
    gate_max_coverage_drop: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Guardrail: catalog coverage@10 may fall at most this share below the champion.",
    )

    # --- hyper-parameter tuning (pipelines/training/tuning.py; docs/architecture.md, "Tuning")
    tune_enabled: bool = Field(
        default=True,
        description="Tune each candidate's search space (Optuna) when a re-tune is due; off: settings and "
        "class defaults only, stored tuned parameters unused.",
    )
    tune_trials: int = Field(
        default=20, ge=1, le=10_000, description="Trial budget per candidate (the default is always one of them)."
    )
    tune_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="Time budget of one tuning over all candidates, shared out as it goes; a trial under way "
        "when it runs out finishes.",
    )
    tune_valid_days: float = Field(
        default=2.0, gt=0, le=365, description="Length of each validation window, cut before every test period."
    )
    tune_valid_folds: int = Field(
        default=2, ge=1, le=10, description="Validation windows, newest first: the steps the pruner compares."
    )
    tune_retune_after_days: float = Field(
        default=7.0,
        ge=0,
        le=3650,
        description="Stored tuned parameters are reused by retraining for this many days (0: re-tune every "
        "training); drift re-tunes at once.",
    )
    selection_interval_days: float = Field(
        default=0.0,
        ge=0,
        le=365,
        description="A training within this many days of the last full model selection backtests only the "
        "selection_keep leaders of that selection (0: every training backtests every candidate); drift, a "
        "changed train_candidates or an older selection run the full one.",
    )
    selection_keep: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Candidates a training between full selections backtests: the best of the last one.",
    )
    selection_folds: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Backtest folds of a training between full selections, the newest ones (0: backtest_folds, "
        "as a full selection); the gate compares the champion on the same folds.",
    )

    # --- publication and serving
    publish_top_n: int = Field(
        default=100, ge=1, le=MAX_TOP_N, description="Items stored per user: the largest k serving answers."
    )
    publish_keep_versions: int = Field(default=5, ge=1, description="Complete versions kept for rollback.")
    publish_batch_users: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Users scored per batch when publishing; each batch is appended to the lists file, so "
        "memory is bounded by one batch (~100 bytes per user and list slot) whatever the number of users.",
    )
    publish_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Processes that score the publication's batches (forked, one thread each, lists written in "
        "order) when there are two batches or more; unset: one per core. Each holds up to two batches. Forked "
        "(Linux): set 1 where fork is unsafe (macOS).",
    )
    category_cap: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="No category may fill more than this share of the first category_cap_head slots.",
    )
    category_cap_head: int = Field(
        default=10, ge=1, description="The slots the category cap holds on: what users see first (a top 10)."
    )

    # --- publication: list rules, reasons and the item index (see docs/architecture.md, "Publication")
    publish_candidate_margin: int = Field(
        default=50, ge=0, description="Candidates scored per user beyond top N, so the rules have items to promote."
    )
    cold_popularity_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of in-category popularity in a cold user's blended score."
    )
    mmr_enabled: bool = Field(default=False, description="Re-rank lists with maximal marginal relevance (diversity).")
    mmr_lambda: float = Field(
        default=0.7, ge=0.0, le=1.0, description="MMR trade-off: 1 is pure relevance, 0 pure dissimilarity."
    )
    reason_min_similarity: float = Field(
        default=0.5,
        ge=-1.0,
        le=1.0,
        description="A model item is explained as similar_to:<history item> when their cosine reaches this.",
    )
    faiss_exact_max_items: int = Field(
        default=50_000, ge=0, description="Catalogs up to this size get an exact (Flat) index; larger ones HNSW."
    )
    faiss_hnsw_m: int = Field(default=32, ge=2, le=512, description="HNSW graph degree (memory vs recall).")
    faiss_hnsw_ef_construction: int = Field(default=80, ge=1, description="HNSW build-time beam width.")
    faiss_hnsw_ef_search: int = Field(default=128, ge=1, description="HNSW query-time beam width (recall vs speed).")

    # --- bias audit and mitigation (models/evaluation/exposure.py, models/lists/, pipelines/reports/bias_audit.py)
    calibration_lambda: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Calibrated re-ranking (Steck 2018) of the first category_cap_head slots: weight of the "
        "KL between a user's category mix in history and in the list against relevance; 0 = off.",
    )
    seller_cap: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="At most this many items of one seller in the first category_cap_head slots; 0 = off.",
    )
    gate_max_gini_rise: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Exposure guardrail: the challenger's exposure Gini@k may exceed the champion's by at most this.",
    )
    audit_z: float = Field(
        default=1.96, gt=0, le=10, description="Normal quantile of the audit's confidence intervals (1.96: 95%)."
    )

    # --- service levels (pipelines/operations/; rendered into deploy/prometheus/rules.yml)
    slo_serving_p99_seconds: float = Field(
        default=0.05, gt=0, le=60, description="Serving p99 latency objective over 5 minutes (API endpoints)."
    )
    slo_latency_regression_factor: float = Field(
        default=2.0,
        gt=1,
        le=100,
        description="Alert when the p99 exceeds this multiple of its own median over the previous day.",
    )
    slo_error_rate: float = Field(
        default=0.01, gt=0, lt=1, description="Share of API answers that may be 5xx over 5 minutes."
    )
    slo_publication_age_hours: float = Field(
        default=36, gt=0, le=24 * 365, description="Oldest the live publication may be (daily publishing + slack)."
    )
    slo_fallback_share: float = Field(
        default=0.25, gt=0, le=1, description="Share of recommendation answers that may come from the fallback."
    )

    # --- health checks (pipelines/operations/health.py, dags/recforge_health.py)
    slo_data_age_hours: float = Field(
        default=36, gt=0, le=24 * 365, description="Oldest the newest accepted event's arrival and mart build may be."
    )
    slo_model_age_days: float = Field(
        default=14, gt=0, le=3650, description="Oldest the champion model may be (weekly retraining + slack)."
    )
    slo_validation_pass_rate: float = Field(
        default=0.9, ge=0, le=1, description="Share of the last week's checkpoint runs that must pass."
    )
    health_cron: str = Field(
        default="0 6 * * *", description="When recforge_health runs besides after each publication (UTC)."
    )
    health_webhook_url: str | None = Field(
        default=None, description="Slack-compatible webhook told of breached service levels; unset: nobody."
    )
    health_webhook_attempts: int = Field(
        default=3, ge=1, le=20, description="Tries of one webhook delivery before giving up (it never blocks)."
    )
    serving_metrics_url: str | None = Field(
        default=None,
        description="The serving API's /metrics, for serving's levels in the health check; unset: not measured.",
    )

    # --- the weekly health report (pipelines/reports/health_report.py)
    report_anomaly_weeks: int = Field(
        default=4, ge=2, le=52, description="Previous weeks a metric's recent range is taken from."
    )
    report_anomaly_tolerance: float = Field(
        default=0.25,
        ge=0,
        le=10,
        description="A week is flagged when a metric leaves its recent [min, max] by more than this share of it.",
    )

    # --- online experiments (pipelines/experiments/, docs/architecture.md "Experiments")
    experiments_dir: Path = Field(
        default=REPO_ROOT / "experiments",
        description="Experiment declarations under version control (YAML/TOML); RECFORGE_HOME/experiments/ "
        "holds more, and the start/stop state.",
    )
    experiment_alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="Significance level of the readout's always-valid p-values."
    )
    experiment_srm_alpha: float = Field(
        default=0.001, gt=0, lt=0.5, description="A sample-ratio-mismatch p-value below this blocks the readout."
    )
    experiment_msprt_tau: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="mSPRT mixing scale: the effect size the sequential test is tuned for, in per-user "
        "standard deviations of the metric.",
    )
    experiment_cuped_days: int = Field(
        default=14, ge=0, le=365, description="Days of pre-period activity CUPED adjusts with (0: no CUPED)."
    )
    experiment_readout_cron: str = Field(
        default="30 6 * * *", description="When recforge_experiment_readout reads out the running experiments (UTC)."
    )
    # off-policy evaluation (pipelines/experiments/off_policy.py)
    ope_clip: float = Field(
        default=100.0,
        ge=1,
        le=1_000_000,
        description="Off-policy evaluation: importance weights target/logging propensity are clipped to this "
        "(lower: less variance, more bias toward a lower CTR).",
    )

    # --- privacy: forgetting users (pipelines/privacy/; docs/architecture.md, "Privacy")
    privacy_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Secret of the keyed hash (HMAC-SHA256) that stands for a user id in the forget audit; "
        "at least 32 characters. Unset: read from privacy_key_file, generated there (mode 0600) on first use.",
    )
    privacy_key_file: Path | None = Field(
        default=None, description="File holding the audit's HMAC secret; unset: RECFORGE_HOME/privacy/forget.key."
    )
    forget_verify: bool = Field(
        default=True,
        description="End every forget by searching every file under RECFORGE_HOME (decoded: Parquet, gzip, zip, "
        "DuckDB) for the ids; a hit fails the request, naming the files.",
    )

    # --- privacy: consent, retention, pseudonyms (docs/architecture.md, "Privacy")
    retention_days: int = Field(
        default=0,
        ge=0,
        le=36500,
        description="Purge events older than this many days (by event time) from every store forgetting reaches, "
        "daily (recforge_retention) or with `recforge retention`; 0: keep everything.",
    )
    # Shared with serving.config (serving/pseudonyms.py): the API hashes the ids it is asked for the same way.
    pseudonymize_user_ids: bool = PSEUDONYMIZE_USER_IDS
    pseudonym_key: SecretStr | None = PSEUDONYM_KEY
    pseudonym_key_file: Path | None = PSEUDONYM_KEY_FILE
    _pseudonym_secret: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _pseudonym_secret_readable(self):
        """Pseudonymisation on needs a usable secret: checked at load, so no id is written without it."""
        self._pseudonym_secret = pseudonym_key(
            self.pseudonymize_user_ids, self.pseudonym_key, self.pseudonym_key_file, "RECFORGE_"
        )
        return self

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The user-id hasher when pseudonymisation is on, else None (serving/pseudonyms.py)."""
        return Pseudonymizer(self._pseudonym_secret) if self._pseudonym_secret is not None else None

    @field_validator("privacy_key", "privacy_key_file", "pseudonym_key", "pseudonym_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """An empty variable (as .env.example leaves it) means unset, not an empty secret or the working directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("warehouse_memory_limit", mode="after")
    @classmethod
    def _duckdb_memory_size(cls, value: str) -> str:
        if not MEMORY_SIZE.fullmatch(value):
            raise ValueError("must be a size DuckDB reads, a number and a unit (B, KB, MB, GB, TB, KiB ... TiB): 4GB")
        return value

    @field_validator("health_webhook_url", "serving_metrics_url", "traffic_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlparse

        if value is not None and (urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc):
            raise ValueError("must be an http(s) URL with a host, e.g. http://127.0.0.1:8000/metrics, or unset")
        return value

    @field_validator("train_cron", "health_cron", "stream_ingest_cron", "experiment_readout_cron", mode="after")
    @classmethod
    def _cron_expression(cls, value: str) -> str:
        from croniter import croniter  # Airflow's own cron parser (a dependency of the pipeline extra)

        if value and not croniter.is_valid(value):
            raise ValueError(
                "must be a cron expression of five fields (minute hour day month weekday), @daily etc., "
                "or empty (no time schedule: on its assets only)"
            )
        return value

    @model_validator(mode="after")
    def _evaluated_lists_are_stored_lists(self) -> Settings:
        """Evaluation scores the head of the lists publication stores, so it cannot look deeper than they go."""
        deepest = max(self.eval_k, self.recall_k)
        if deepest > self.publish_top_n:
            raise ValueError(
                "RECFORGE_EVAL_K / RECFORGE_RECALL_K must not exceed RECFORGE_PUBLISH_TOP_N: "
                f"eval_k={self.eval_k} / recall_k={self.recall_k} look deeper than publish_top_n={self.publish_top_n}: "
                "evaluation scores the stored lists, so raise publish_top_n or lower the cut-offs"
            )
        return self

    @model_validator(mode="after")
    def _ingest_window_is_not_empty(self) -> Settings:
        """The ingest DAG's last day cannot come before its first."""
        if self.ingest_end_date is not None and self.ingest_end_date < self.ingest_start_date:
            raise ValueError(
                f"RECFORGE_INGEST_END_DATE={self.ingest_end_date} is before RECFORGE_INGEST_START_DATE="
                f"{self.ingest_start_date}: must be on or after it, or unset"
            )
        return self

    @model_validator(mode="after")
    def _segments_do_not_overlap(self) -> Settings:
        """A user cannot be cold (below cold_user_below items) and a power user (above segment_power_above)."""
        if self.segment_power_above < self.cold_user_below:
            raise ValueError(
                f"RECFORGE_SEGMENT_POWER_ABOVE={self.segment_power_above} is below RECFORGE_COLD_USER_BELOW="
                f"{self.cold_user_below}: must be >= it, or a user is cold and power at once"
            )
        return self

    @property
    def signal_weights(self) -> dict[str, float]:
        """Event type -> signal weight (the ``weight_<event type>`` settings), for code that bypasses the warehouse."""
        return {event: getattr(self, name) for event, name in SIGNAL_WEIGHT_SETTINGS.items()}

    # Paths are derived, never configured separately, so they cannot drift apart.
    @cached_property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @cached_property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @cached_property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @cached_property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @cached_property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def home_experiments_dir(self) -> Path:
        """Declarations kept with the home, and the experiments' start/stop state (state.json)."""
        return self.home / "experiments"

    @cached_property
    def published_dir(self) -> Path:
        return self.home / "published"

    @cached_property
    def tuning_dir(self) -> Path:
        """The tuned parameters training reuses (``best_params.json``)."""
        return self.home / "tuning"

    @cached_property
    def models_dir(self) -> Path:
        """Scratch space for model files before they are logged to MLflow."""
        return self.home / "models"

    @cached_property
    def privacy_dir(self) -> Path:
        """The forget requests' working files and the audit's HMAC secret (never published)."""
        return self.home / "privacy"

    @property
    def privacy_key_path(self) -> Path:
        return self.privacy_key_file or self.privacy_dir / "forget.key"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_location(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def dbt_project_dir(self) -> Path:
        return REPO_ROOT / "dbt_project"

    @property
    def expectations_dir(self) -> Path:
        return REPO_ROOT / "expectations"

    @property
    def dags_dir(self) -> Path:
        return REPO_ROOT / "dags"

    def to_environment(self) -> dict[str, str]:
        """The explicitly set fields as RECFORGE_* variables, so other processes get the same settings."""
        env = {}
        for name, value in self.model_dump(exclude_unset=True).items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            text = (
                json.dumps(value)
                if isinstance(value, list | dict)
                else value.isoformat()
                if isinstance(value, date)
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
            env[f"RECFORGE_{name.upper()}"] = text
        return env

    def ensure_dirs(self) -> None:
        for path in (
            self.home,
            self.landing_dir,
            self.quarantine_dir,
            self.airflow_home,
            self.mlflow_dir,
            self.reports_dir,
            self.published_dir,
            self.models_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def describe_invalid_settings(error: ValidationError) -> str:
    """One line naming each invalid setting by its environment variable, its value and its valid range.

    For the CLI, which must exit with one clear line rather than pydantic's multi-line report.
    """
    return describe_for(error, Settings)


def get_settings() -> Settings:
    """Read settings from the environment now (not cached: tests and tasks change it).

    A rejected setting raises InvalidSettings, whose message is one line naming the variable, its
    value and its range: what the CLI prints and what a DAG file's import error shows.
    """
    return load_settings(Settings)


__all__ = [
    "REPO_ROOT",
    "SIGNAL_WEIGHT_SETTINGS",
    "InvalidSettings",
    "Settings",
    "describe_invalid_settings",
    "get_settings",
]
