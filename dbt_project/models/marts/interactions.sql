-- One row per user x item over the whole log: how strongly, how often and when they interacted,
-- and whether the user bought or rated the item (publication never recommends those back).
with events as (
    select * from {{ ref('interaction_events') }}
),

snapshot as (
    select max(event_ts) as snapshot_ts from events
),

decayed as (
    select
        events.user_id,
        events.item_id,
        events.event_type,
        events.event_ts,
        events.weight * {{ decay('events.event_ts', 'snapshot.snapshot_ts') }} as weight
    from events
    cross join snapshot
),

final as (
    select
        user_id,
        item_id,
        sum(weight) as weight,
        count(*) as n_events,
        count(*) filter (where event_type = 'purchase') as n_purchases,
        count(*) filter (where event_type = 'rating') as n_ratings,
        min(event_ts) as first_ts,
        max(event_ts) as last_ts
    from decayed
    group by user_id, item_id
)

select * from final
