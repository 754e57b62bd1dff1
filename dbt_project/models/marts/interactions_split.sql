-- One row per user x item x split. The log is cut by time, not by user: the last
-- test_days are `test`, the valid_days before them `valid`, everything earlier `train`.
-- Decay is measured from the end of each row's own window, so no split sees a later one.
-- A pair whose events all precede the valid window is its int_interaction_cells row, the weight moved to the
-- window's start: only the two recent windows, and the older events of pairs that reach into them, are read
-- event by event, so a day's build does not aggregate the history again.
with events as (
    select * from {{ ref('interaction_events') }}
),

cells as (
    select * from {{ ref('int_interaction_cells') }}
),

cutoffs as (
    select
        max(last_ts) as snapshot_ts,
        max(last_ts) - {{ days(var('test_days')) }} as test_start,
        max(last_ts) - {{ days(var('test_days') ~ ' + ' ~ var('valid_days')) }} as valid_start
    from cells
),

train_pairs as (
    -- Every event before the valid window: the pair's train row is the pair itself.
    select
        cells.user_id,
        cells.item_id,
        'train' as split,
        cells.weight_at_reference * {{ decay('cells.weight_reference_ts', 'cutoffs.valid_start') }} as weight,
        cells.n_events,
        cells.first_ts,
        cells.last_ts,
        cutoffs.valid_start as window_end
    from cells
    cross join cutoffs
    where cells.last_ts < cutoffs.valid_start
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

aggregated as (
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
),

final as (
    select * from train_pairs
    union all
    select * from aggregated
)

select * from final
