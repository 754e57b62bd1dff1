-- One row per accepted, deduplicated event of a user who is not a bot and did not withhold consent
-- for personalisation (int_events_consented), with its signal weight.
-- The event-grain interface out of the warehouse: every other mart aggregates it, and training's
-- rolling backtest reads it directly because each fold cuts the log at its own time. The weight
-- is the signal strength only; time decay depends on a reference time, which each reader sets.
-- A view: the rows are int_events_consented's, which a day's build extends incrementally; a table
-- here would copy the whole history every day for one column of arithmetic.
{{ config(materialized='view') }}
with events as (
    select * from {{ ref('int_events_consented') }}
),

final as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        event_ts,
        event_date,
        session_id,
        event_value,
        {{ signal_weight('event_type') }} as weight
    from events
)

select * from final
