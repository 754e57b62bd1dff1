-- One row per user x item x split. The log is cut by time, not by user: the last
-- test_days are `test`, the valid_days before them `valid`, everything earlier `train`.
-- Decay is measured from the end of each row's own window, so no split sees a later one.
with events as (
    select * from {{ ref('interaction_events') }}
),

cutoffs as (
    select
        max(event_ts) as snapshot_ts,
        max(event_ts) - {{ days(var('test_days')) }} as test_start,
        max(event_ts) - {{ days(var('test_days') ~ ' + ' ~ var('valid_days')) }} as valid_start
    from events
),

assigned as (
    select
        events.user_id,
        events.item_id,
        events.weight,
        events.event_ts,
        case
            when events.event_ts >= cutoffs.test_start then 'test'
            when events.event_ts >= cutoffs.valid_start then 'valid'
            else 'train'
        end as split,
        case
            when events.event_ts >= cutoffs.test_start then cutoffs.snapshot_ts
            when events.event_ts >= cutoffs.valid_start then cutoffs.test_start
            else cutoffs.valid_start
        end as window_end
    from events
    cross join cutoffs
),

final as (
    select
        user_id,
        item_id,
        split,
        sum(weight * {{ decay('event_ts', 'window_end') }}) as weight,
        count(*) as n_events,
        min(event_ts) as first_ts,
        max(event_ts) as last_ts,
        max(window_end) as window_end
    from assigned
    group by user_id, item_id, split
)

select * from final
