-- The events every mart is built from: deduplicated, and without the users int_bot_users flags.
with events as (
    select * from {{ ref('int_events_deduped') }}
),

bots as (
    select * from {{ ref('int_bot_users') }}
),

final as (
    select events.*
    from events
    left join bots on events.user_id = bots.user_id
    where bots.user_id is null
)

select * from final
