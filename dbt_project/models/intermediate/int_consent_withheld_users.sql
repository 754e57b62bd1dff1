-- One row per user whose latest consent signal withholds personalisation
-- (context.consent.personalization = false; macros/consent.sql). The latest signal wins because
-- consent is revocable and can be given again: the user's current choice governs all their events,
-- earlier ones included. A tie at the same instant resolves to withheld (the cautious reading).
-- Events without a signal change nothing: a user who never sent one is not in this model.
with events as (
    select * from {{ ref('int_events_deduped') }}
),

signals as (
    select user_id, event_id, event_ts, consent_personalization
    from events
    where consent_personalization is not null
),

ranked as (
    select
        *,
        row_number() over (
            partition by user_id
            order by event_ts desc, case when consent_personalization then 1 else 0 end, event_id desc
        ) as recency,
        count(*) over (partition by user_id) as n_signals
    from signals
),

final as (
    select
        user_id,
        event_ts as withheld_since,
        n_signals
    from ranked
    where recency = 1 and not consent_personalization
)

select * from final
