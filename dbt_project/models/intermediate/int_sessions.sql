-- One row per session: a user's run of events with no gap longer than session_gap_minutes.
-- Derived from the events rather than trusted from the client's session_id, which some
-- sources (MovieLens, Retailrocket) do not have and others reset on every app start.
with events as (
    select * from {{ ref('int_events_consented') }}
),

gaps as (
    select
        user_id,
        event_id,
        item_id,
        event_type,
        event_ts,
        case
            when lag(event_ts) over (partition by user_id order by event_ts, event_id) is null then 1
            when {{ epoch_seconds('event_ts') }}
                - {{ epoch_seconds('lag(event_ts) over (partition by user_id order by event_ts, event_id)') }}
                > 60 * {{ var('session_gap_minutes') }} then 1
            else 0
        end as starts_session
    from events
),

numbered as (
    select
        *,
        sum(starts_session) over (
            partition by user_id order by event_ts, event_id rows unbounded preceding
        ) as session_number
    from gaps
),

final as (
    select
        user_id || '#' || cast(session_number as varchar) as session_key,
        user_id,
        session_number,
        min(event_ts) as started_at,
        max(event_ts) as ended_at,
        count(*) as n_events,
        count(distinct item_id) as n_items,
        sum(case when event_type = 'purchase' then 1 else 0 end) as n_purchases
    from numbered
    group by user_id, session_number
)

select * from final
