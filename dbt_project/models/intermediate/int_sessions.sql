-- One row per session: a user's run of events with no gap longer than session_gap_minutes.
-- Derived from the events rather than trusted from the client's session_id, which some
-- sources (MovieLens, Retailrocket) do not have and others reset on every app start.
-- Incremental per user (macros/incremental_users.sql, macros/sessions.sql): a day's build rebuilds only the
-- sessions the day's events can reach, numbered on from the user's last kept session.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='session_key',
        pre_hook="{{ delete_sessions_new_events_reach(ref('int_events_consented')) }}",
    )
}}
-- depends_on: {{ ref('int_user_event_digests') }}

with events as (
    select * from {{ ref('int_events_consented') }}
),

{% if is_incremental() %}
kept as (
    -- What the pre-hook left of each user: sessions before any new event's reach.
    select user_id, max(session_number) as n_kept, max(ended_at) as kept_until
    from {{ this }}
    group by user_id
),

users_to_sessionize as (
    select distinct user_id from events where ingested_at > {{ folded_through(this) }}
    union
    select user_id from {{ ref('int_user_event_digests') }}
    where user_id not in (select user_id from kept)
),

in_scope as (
    select events.*, coalesce(kept.n_kept, 0) as n_kept
    from events
    inner join users_to_sessionize on events.user_id = users_to_sessionize.user_id
    left join kept on events.user_id = kept.user_id
    where kept.kept_until is null or events.event_ts > kept.kept_until
),
{% else %}
in_scope as (
    select events.*, 0 as n_kept from events
),
{% endif %}

gaps as (
    select
        user_id,
        event_id,
        item_id,
        event_type,
        event_ts,
        ingested_at,
        n_kept,
        case
            when lag(event_ts) over (partition by user_id order by event_ts, event_id) is null then 1
            when {{ epoch_seconds('event_ts') }}
                - {{ epoch_seconds('lag(event_ts) over (partition by user_id order by event_ts, event_id)') }}
                > 60 * {{ var('session_gap_minutes') }} then 1
            else 0
        end as starts_session
    from in_scope
),

numbered as (
    select
        *,
        n_kept + sum(starts_session) over (
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
        sum(case when event_type = 'purchase' then 1 else 0 end) as n_purchases,
        sum({{ event_checksum('event_id') }}) as event_checksum,
        max(ingested_at) as max_ingested_at
    from numbered
    group by user_id, session_number
)

select * from final
