-- What Python writes: the raw layer (ingestion) and the monitoring tables (validation, drift).
-- Portable SQL: the same file creates them in DuckDB and in PostgreSQL (pipelines/warehouse/connection.py).
-- Everything downstream of raw.* lives in dbt_project/.
create schema if not exists raw;
create schema if not exists quarantine;

-- One row per accepted event, in the canonical event contract (docs/architecture.md).
create table if not exists raw.events (
    event_id     varchar not null,
    user_id      varchar not null,
    item_id      varchar not null,
    event_type   varchar not null,
    event_ts     timestamptz not null,
    value        double precision,
    session_id   varchar,
    context      json,
    source       varchar not null,
    batch_id     varchar not null,
    landing_date date not null,   -- the landing day the row arrived in: what a re-run replaces
    ingested_at  timestamptz not null,
    event_date   date             -- the UTC day the event happened: late events land in their own day
);
alter table raw.events add column if not exists event_date date;

-- One row per item, replaced whole by each catalog snapshot.
create table if not exists raw.items (
    item_id    varchar not null,
    title      varchar,
    category   varchar,
    price      double precision,
    in_stock   boolean,
    is_blocked boolean,
    created_at timestamptz,
    attributes json
);

-- The catalog file raw.items was last loaded from (at most one row): a landing run whose catalog
-- file has the same SHA-256 (and raw.items still its row count) keeps raw.items instead of
-- re-reading and rewriting it; anything else that writes raw.items deletes this row.
create table if not exists raw.catalog_snapshot (
    file      varchar not null,
    sha256    varchar not null,
    items     integer not null,
    loaded_at timestamptz not null
);

-- One row per rejected input row: its raw text, why, and where it came from.
create table if not exists quarantine.events (
    batch_id     varchar not null,
    landing_date date not null,
    file         varchar not null,
    line_number  integer not null,
    reason       varchar not null,
    raw          varchar not null,
    ingested_at  timestamptz not null
);

-- One row per shown item of an accepted served slate (serving/impressions/format.py lands one row per
-- answer with the items as lists; ingest unnests them here, so the warehouse needs no list type).
create table if not exists raw.impression_items (
    request_id     varchar not null,
    served_at      timestamptz not null,
    endpoint       varchar not null,
    user_id        varchar,
    anchor_item_id varchar,
    fallback       boolean not null,
    version        varchar not null,
    experiment     varchar,
    variant        varchar,
    slate_size     integer not null,
    position       integer not null,   -- 1 = first shown
    item_id        varchar not null,
    score          double precision not null,
    propensity     double precision,
    batch_id       varchar not null,
    landing_date   date not null,
    ingested_at    timestamptz not null,
    shadow         boolean default false  -- a shadow variant's slate: logged, never shown
);
alter table raw.impression_items add column if not exists shadow boolean default false;

-- One row per rejected served slate: the slate as JSON, why, and where it came from.
create table if not exists quarantine.impressions (
    batch_id     varchar not null,
    landing_date date not null,
    file         varchar not null,
    row_number   integer not null,
    reason       varchar not null,
    raw          varchar not null,
    ingested_at  timestamptz not null
);

-- One row per ingested file and interval: accepted + quarantined = input, always.
create table if not exists raw.batches (
    batch_id       varchar not null,
    source         varchar not null,
    interval_start timestamptz not null,
    interval_end   timestamptz not null,
    file           varchar not null,
    rows_input     integer not null,
    rows_accepted  integer not null,
    rows_quarantined integer not null,
    quarantined_by_reason json,
    started_at     timestamptz not null,
    finished_at    timestamptz not null,
    landing_date   date,           -- the landing day (or, for an imported file, its last event day)
    rows_late      integer         -- accepted events that happened before the landing day
);
alter table raw.batches add column if not exists landing_date date;
alter table raw.batches add column if not exists rows_late integer;

-- One row per file a run found but did not read, and why: nothing in a landing day or an import
-- is ignored silently (reasons: pipelines.ingest.run.SkippedFile).
create table if not exists raw.skipped_files (
    source       varchar not null,
    landing_date date,             -- the landing day; null for a file of an import
    file         varchar not null,
    reason       varchar not null,
    skipped_at   timestamptz not null
);

create schema if not exists monitoring;

-- One row per measure per drift check (one 'baseline' row when there was no baseline yet).
create table if not exists monitoring.drift_results (
    checked_at        timestamptz not null,
    window_start      timestamptz not null,
    window_end        timestamptz not null,
    baseline_start    timestamptz,
    baseline_end      timestamptz,
    measure           varchar not null,
    method            varchar not null,
    value             double precision,
    threshold         double precision,
    drifted           boolean not null,
    retrain_triggered boolean not null,
    report            varchar   -- the HTML report, relative to reports/ (absolute in rows from before 2026-12)
);

-- The distributions of the window the current model family was trained on.
create table if not exists monitoring.drift_baseline (
    window_start timestamptz not null,
    window_end   timestamptz not null,
    kind         varchar not null,  -- event_type | item | user
    key          varchar not null,
    value        double precision not null
);

-- One row per checkpoint run: what analysts see in reports/index.html, and the previous
-- row counts the marts suite compares against.
create table if not exists monitoring.validation_runs (
    validated_at     timestamptz not null,
    suite            varchar not null,
    batch            varchar not null,
    rows_validated   bigint not null,
    passed           boolean not null,
    failed_critical  json,
    failed_warning   json,
    docs_page        varchar   -- this suite's result page in Data Docs, relative to reports/
);
alter table monitoring.validation_runs add column if not exists docs_page varchar;

-- One row per service level per health check (recforge_health): the history the weekly report reads.
create table if not exists monitoring.health_checks (
    checked_at   timestamptz not null,
    run_id       varchar not null,     -- the Airflow run (or "cli") that measured it
    level        varchar not null,     -- pipelines.operations.health.LEVELS
    value        double precision,     -- null: not measured (see detail)
    objective    double precision not null,
    breached     boolean not null,
    detail       varchar
);

-- One row per UTC day x reason x status of serving's failure log (pipelines/operations/failures.py):
-- what the weekly report counts after the bounded log has rotated those records out.
create table if not exists monitoring.failed_requests (
    day          date not null,
    reason       varchar not null,    -- serving.failures.Reason
    status       integer not null,    -- the HTTP status answered (200 for a fallback)
    answers      bigint not null,
    recorded_at  timestamptz not null
);

-- One row per webhook notification delivered, so a retried check never tells the operators twice.
create table if not exists monitoring.health_notifications (
    run_id       varchar not null,
    notified_at  timestamptz not null,
    breached     varchar not null     -- the breached levels, comma-separated
);

-- One row per forget request (pipelines/privacy/forget.py): what was removed where, never who.
-- user_hashes holds HMAC-SHA256(secret, user_id) per user (pipelines/privacy/keys.py).
create table if not exists monitoring.forget_requests (
    request_id          varchar not null,
    requested_at        timestamptz not null,
    finished_at         timestamptz,
    user_hashes         json not null,
    stores              json not null,     -- [{store, rows_removed, note}] in the order they were walked
    publication_version varchar,           -- the live version that no longer holds the users
    model_versions      json,              -- registered versions whose artifacts lost the users' rows
    verified            boolean,           -- no file under RECFORGE_HOME names an id (null: not checked)
    remaining_files     integer
);

-- One row per retention run (pipelines/privacy/retention.py): the cutoff and the rows purged per store.
create table if not exists monitoring.retention_runs (
    run_id          varchar not null,
    ran_at          timestamptz not null,
    finished_at     timestamptz,
    retention_days  integer not null,
    cutoff          timestamptz not null,
    stores          json not null,     -- [{store, rows_removed, note}] in the order they were walked
    rows_removed    bigint not null
);

-- The fingerprint (SHA-256) of this file as last applied: opening the warehouse skips the file while it matches
-- (pipelines/warehouse/connection.py, `_apply_schema`), since every task opens the warehouse at least once.
create table if not exists monitoring.schema_applied (
    fingerprint varchar not null,
    applied_at  timestamptz not null
);
