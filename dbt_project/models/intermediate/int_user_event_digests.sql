-- One row per user with eligible events (int_events_consented): how many, and a checksum of their ids
-- (macros/incremental_users.sql). The per-user incremental models compare what they folded in against it,
-- so a change anywhere in a user's history (a re-ingested batch, consent, a bot flag, an erasure, a
-- setting) rebuilds that user and only that user. The one read of the whole event history a day's build
-- keeps: a single pass of two columns, in place of every aggregate's window and grouping over it.
with events as (
    select user_id, event_id from {{ ref('int_events_consented') }}
),

final as (
    select
        user_id,
        count(*) as n_events,
        sum({{ event_checksum('event_id') }}) as event_checksum
    from events
    group by user_id
)

select * from final
