{#- The pre-hook of int_sessions on a plain build, one statement read before anything goes: the sessions of
    users out of step (macros/incremental_users.sql), and every session a user's new events can reach. A new
    event at t joins a session that ended within session_gap_minutes before it, or starts or merges later
    ones, so a user's sessions that ended earlier than their earliest new event minus the gap stay exactly as
    they are; the rest are rebuilt from the events after the last kept one. -#}
{% macro delete_sessions_new_events_reach(events) -%}
    {%- if is_incremental() -%}
        {%- set watermark = folded_through(this) -%}
        delete from {{ this }}
        where user_id in ({{ users_out_of_step(this, events, watermark) }})
            or session_key in (select session_key from ({{ sessions_new_events_reach(events, watermark) }}) as reached)
    {%- endif -%}
{%- endmacro %}

{#- Each user's earliest event ingested after the watermark. -#}
{% macro earliest_new_events(events, watermark) -%}
    select user_id, min(event_ts) as earliest_new_ts
    from {{ events }}
    where ingested_at > {{ watermark }}
    group by user_id
{%- endmacro %}

{#- The held sessions a new event can reach (the rule above, in one place: the pre-hook deletes them and
    int_sessions reads its events from the earliest of them). -#}
{% macro sessions_new_events_reach(events, watermark) -%}
    select sessions.session_key, sessions.user_id, sessions.started_at
    from {{ this }} as sessions
    inner join ({{ earliest_new_events(events, watermark) }}) as new_events on sessions.user_id = new_events.user_id
    where {{ epoch_seconds('sessions.ended_at') }}
        >= {{ epoch_seconds('new_events.earliest_new_ts') }} - 60 * {{ var('session_gap_minutes') }}
{%- endmacro %}
