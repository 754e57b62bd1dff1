-- One row per user x item over the whole log: how strongly, how often and when they interacted.
with events as (
    select * from {{ ref('int_events_without_bots') }}
),

snapshot as (
    select max(event_ts) as snapshot_ts from events
),

weighted as (
    select
        events.user_id,
        events.item_id,
        events.event_ts,
        {{ signal_weight('events.event_type') }} * {{ decay('events.event_ts', 'snapshot.snapshot_ts') }} as weight
    from events
    cross join snapshot
),

final as (
    select
        user_id,
        item_id,
        sum(weight) as weight,
        count(*) as n_events,
        min(event_ts) as first_ts,
        max(event_ts) as last_ts
    from weighted
    group by user_id, item_id
)

select * from final
