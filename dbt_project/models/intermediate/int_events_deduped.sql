-- Ingestion already rejects duplicate event ids, but the warehouse must not depend on it:
-- keep the first arrival of each event id.
with events as (
    select * from {{ ref('stg_events') }}
),

ranked as (
    select
        *,
        row_number() over (partition by event_id order by landing_date, batch_id) as arrival_rank
    from events
),

final as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        event_ts,
        event_value,
        session_id,
        context,
        source,
        batch_id,
        landing_date
    from ranked
    where arrival_rank = 1
)

select * from final
