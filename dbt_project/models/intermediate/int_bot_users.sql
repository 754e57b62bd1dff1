-- One row per user whose activity no person produces: more than bot_max_events_per_day
-- behavioural events on some day. Ingestion catches fast bursts within a batch (events per
-- minute); this catches steady scrapers spread over a whole day. Ratings are not counted.
-- From the per user, day and batch counts (int_user_day_batch_counts, incremental): a day spread over
-- several batches (late arrivals, a stream's micro-batches) is summed here.
with counts as (
    select * from {{ ref('int_user_day_batch_counts') }}
),

per_day as (
    select user_id, event_date, sum(n_behavioural_events) as n_events
    from counts
    group by user_id, event_date
),

final as (
    select
        user_id,
        max(n_events) as max_events_per_day,
        count(*) filter (where n_events > {{ var('bot_max_events_per_day') }}) as days_flagged
    from per_day
    group by user_id
    having max(n_events) > {{ var('bot_max_events_per_day') }}
)

select * from final
