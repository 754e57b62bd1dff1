-- One row per event id: the first arrival wins (earliest landing day, then batch id).
-- Incremental: a run reprocesses only the batches ingested since the last run. A re-ingested
-- batch keeps its batch id and gets a new ingested_at, so delete+insert on batch_id replaces it:
-- re-running or backfilling a day never duplicates. Ingestion already quarantines ids accepted
-- from an earlier landing day; this layer does not depend on it.
-- A day's build compares its ids only with the held rows of the event dates the new rows cover
-- (a handful: the day and its late arrivals), not with the whole history: a re-delivered event
-- repeats its own timestamp, so its first arrival is on one of those dates. An id reused by an
-- event of another date (which ingestion quarantines when days land in order) is not dropped here;
-- the unique test on event_id then fails the build, and a full refresh keeps its first arrival.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='batch_id',
    )
}}

with events as (
    select * from {{ ref('stg_events') }}
    {% if is_incremental() %}
    where ingested_at > {{ ingested_through(this, 'ingested_at') }}
    {% endif %}
),

{% if is_incremental() %}
kept_elsewhere as (
    -- Ids this model already holds from batches that are not being replaced: they arrived first.
    -- Only the new rows' event dates: the anti-join below holds the ids of a few dates, not every
    -- held id (at 1M users the model went 13.1 -> 9.6 s; the scan itself still reads the column).
    select event_id from {{ this }}
    where batch_id not in (select distinct batch_id from events)
      and event_date between (select min(event_date) from events) and (select max(event_date) from events)
),
{% endif %}

ranked as (
    select
        *,
        row_number() over (partition by event_id order by landing_date, batch_id) as arrival_rank
    from events
    {% if is_incremental() %}
    where event_id not in (select event_id from kept_elsewhere)
    {% endif %}
),

final as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        event_ts,
        event_date,
        event_value,
        session_id,
        context,
        consent_personalization,
        source,
        batch_id,
        landing_date,
        cast(ingested_at as timestamp) as ingested_at
    from ranked
    where arrival_rank = 1
)

select * from final
