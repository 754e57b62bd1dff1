-- The events every mart is built from: deduplicated, no bots, and no user who withheld consent
-- for personalisation (int_consent_withheld_users). The excluded events are counted in
-- marts.consent_withheld_users, never dropped silently.
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
