-- One row per user x item over the whole log: how strongly, how often and when they interacted,
-- and whether the user bought or rated the item (publication never recommends those back).
-- A view over int_interaction_cells, which a day's build updates for the day's pairs only: the weight is
-- the cell's, moved from its reference time to the snapshot (the latest event) by the same decay.
{{ config(materialized='view') }}
with cells as (
    select * from {{ ref('int_interaction_cells') }}
),

snapshot as (
    select max(last_ts) as snapshot_ts from cells
),

final as (
    select
        cells.user_id,
        cells.item_id,
        cells.weight_at_reference * {{ decay('cells.weight_reference_ts', 'snapshot.snapshot_ts') }} as weight,
        cells.n_events,
        cells.n_purchases,
        cells.n_ratings,
        cells.first_ts,
        cells.last_ts
    from cells
    cross join snapshot
)

select * from final
