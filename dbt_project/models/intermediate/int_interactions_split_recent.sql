-- The rows of marts.interactions_split that need the events one by one: every pair's valid and test rows, and
-- the train rows of pairs whose events straddle the valid window's start. A table rebuilt each day, since the
-- windows move with the snapshot; it reads the two recent windows' events and the older events of the
-- straddling pairs only. The mart's other train rows, pairs whose events all precede the valid window, are
-- int_interaction_cells rows with the weight moved to the window's start: the mart's view adds them at read
-- time, so a day's build neither aggregates nor writes the history again.
with events as (
    select * from {{ ref('interaction_events') }}
),

cells as (
    select * from {{ ref('int_interaction_cells') }}
),

cutoffs as (
    {{ split_cutoffs('cells') }}
),

straddling_pairs as (
    -- Events on both sides of the valid window's start: their train events are read one by one.
    select cells.user_id, cells.item_id
    from cells
    cross join cutoffs
    where cells.first_ts < cutoffs.valid_start and cells.last_ts >= cutoffs.valid_start
),

event_rows as (
    select events.user_id, events.item_id, events.weight, events.event_ts
    from events
    cross join cutoffs
    where events.event_ts >= cutoffs.valid_start
    union all
    select events.user_id, events.item_id, events.weight, events.event_ts
    from events
    cross join cutoffs
    inner join straddling_pairs
        on events.user_id = straddling_pairs.user_id and events.item_id = straddling_pairs.item_id
    where events.event_ts < cutoffs.valid_start
),

assigned as (
    select
        event_rows.user_id,
        event_rows.item_id,
        event_rows.weight,
        event_rows.event_ts,
        case
            when event_rows.event_ts >= cutoffs.test_start then 'test'
            when event_rows.event_ts >= cutoffs.valid_start then 'valid'
            else 'train'
        end as split,
        case
            when event_rows.event_ts >= cutoffs.test_start then cutoffs.snapshot_ts
            when event_rows.event_ts >= cutoffs.valid_start then cutoffs.test_start
            else cutoffs.valid_start
        end as window_end
    from event_rows
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
