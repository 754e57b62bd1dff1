-- One row per user x item x split. The log is cut by time, not by user: the last
-- test_days are `test`, the valid_days before them `valid`, everything earlier `train`.
-- Decay is measured from the end of each row's own window, so no split sees a later one.
-- A view, like marts.interactions: a pair whose events all precede the valid window is its
-- int_interaction_cells row, the weight moved to the window's start; every other row (the two recent
-- windows, and the train rows of pairs reaching into them) is int_interactions_split_recent's, which a day's
-- build rebuilds from the recent events. The history's train rows are neither aggregated nor copied daily.
{{ config(materialized='view') }}
with cells as (
    select * from {{ ref('int_interaction_cells') }}
),

recent as (
    select * from {{ ref('int_interactions_split_recent') }}
),

cutoffs as (
    {{ split_cutoffs('cells') }}
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

final as (
    select * from train_pairs
    union all
    select * from recent
)

select * from final
