-- The events every mart is built from: deduplicated, no bots, and no user who withheld consent
-- for personalisation (int_consent_withheld_users). The excluded events are counted in
-- marts.consent_withheld_users, never dropped silently.
-- A view, like the event-grain mart over it: a day's build copies no history. Its base,
-- int_events_deduped, is incremental; the filters are anti-joins against two small tables, paid by
-- each reader (an incremental copy here cost more to keep right than the copy it saved: 45 s a day at
-- 1M users against 38 s for the table it replaced, since consent and bot flags reach back into history).
with events as (
    select * from {{ ref('int_events_without_bots') }}
),

withheld as (
    select * from {{ ref('int_consent_withheld_users') }}
),

final as (
    select events.*
    from events
    left join withheld on events.user_id = withheld.user_id
    where withheld.user_id is null
)

select * from final
