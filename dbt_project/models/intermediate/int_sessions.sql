-- One row per session: a user's run of events with no gap longer than session_gap_minutes.
-- Derived from the events rather than trusted from the client's session_id, which some
-- sources (MovieLens, Retailrocket) do not have and others reset on every app start.
-- Incremental per user (macros/incremental_users.sql, macros/sessions.sql): a day's build rebuilds only the
-- sessions the day's events can reach, numbered on from the user's last kept session.
{{
    config(
        materialized='incremental',
        tags=['per_user_folding'],
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
{%- set watermark = folded_through(this) -%}
{%- set reach_query -%}
    with new_events as (
        {{ earliest_new_events(ref('int_events_consented'), watermark) }}
    ),

    reached as (
        select user_id, min(started_at) as first_reached
        from ({{ sessions_new_events_reach(ref('int_events_consented'), watermark) }}) as reached_sessions
        group by user_id
    )

    select cast(min(coalesce(least(reached.first_reached, new_events.earliest_new_ts), new_events.earliest_new_ts))
        as varchar)
    from new_events
    left join reached on new_events.user_id = reached.user_id
{%- endset -%}
{#- The earliest event a new event can reach (read before the pre-hook deletes): every event a held user's
    rebuilt sessions hold is at or after it, so the events before it are skipped by their row groups' bounds. -#}
{%- set reach_from = (run_query(reach_query).columns[0].values()[0] if execute else none) or '9999-12-31 00:00:00' -%}
kept as (
    -- What the pre-hook left of each user: sessions before any new event's reach.
    select user_id, max(session_number) as n_kept, max(ended_at) as kept_until
    from {{ this }}
    group by user_id
),

recent as (
    select * from events where event_ts >= cast('{{ reach_from }}' as timestamp)
),

history_needed as (
    -- Users with nothing kept (new, out of step, or every session reached) whose events are not all recent.
    select digests.user_id
    from {{ ref('int_user_event_digests') }} as digests
    left join (select user_id, count(*) as n_events from recent group by user_id) as recent_counts
        on digests.user_id = recent_counts.user_id
    where digests.n_events <> coalesce(recent_counts.n_events, 0)
        and digests.user_id not in (select user_id from kept)
),

users_to_sessionize as (
    select distinct user_id from recent where ingested_at > {{ watermark }}
    union
    select user_id from {{ ref('int_user_event_digests') }}
    where user_id not in (select user_id from kept)
),

in_scope as (
    select recent.*, coalesce(kept.n_kept, 0) as n_kept
    from recent
    inner join users_to_sessionize on recent.user_id = users_to_sessionize.user_id
    left join kept on recent.user_id = kept.user_id
    where (kept.kept_until is null or recent.event_ts > kept.kept_until)
        and recent.user_id not in (select user_id from history_needed)
    union all
    select events.*, 0 as n_kept
    from events
    where events.user_id in (select user_id from history_needed)
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
