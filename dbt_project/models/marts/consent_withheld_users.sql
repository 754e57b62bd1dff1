-- One row per user whose latest consent signal withholds personalisation: the accounting of what
-- the consent rule kept out of training and lists (their events are in no other mart), and the
-- list publication reads to give these users the fallback instead of a personalised list.
with withheld as (
    select * from {{ ref('int_consent_withheld_users') }}
),

events as (
    select * from {{ ref('int_events_without_bots') }}
),

excluded as (
    select user_id, count(*) as n_events_excluded
    from events
    group by user_id
),

final as (
    select
        withheld.user_id,
        withheld.withheld_since,
        withheld.n_signals,
        coalesce(excluded.n_events_excluded, 0) as n_events_excluded
    from withheld
    left join excluded on withheld.user_id = excluded.user_id
)

select * from final
