-- One row per user: how active, since when, in which segment, and which categories they prefer.
-- Segments by distinct items interacted with: cold below cold_user_below, power above
-- segment_power_above, casual between (vars from the settings evaluation reports metrics by and
-- publication uses for its cold-user blend; defaults 5 and 50).
with events as (
    select * from {{ ref('interaction_events') }}
),

items as (
    select * from {{ ref('stg_items') }}
),

sessions as (
    select * from {{ ref('int_sessions') }}
),

activity as (
    select
        user_id,
        count(*) as n_events,
        count(distinct item_id) as n_items,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'click') as n_clicks,
        count(*) filter (where event_type = 'add_to_cart') as n_add_to_cart,
        count(*) filter (where event_type = 'purchase') as n_purchases,
        count(*) filter (where event_type = 'rating') as n_ratings,
        count(distinct event_date) as n_active_days,
        min(event_ts) as first_ts,
        max(event_ts) as last_ts
    from events
    group by user_id
),

session_counts as (
    select user_id, count(*) as n_sessions from sessions group by user_id
),

category_events as (
    select events.user_id, coalesce(items.category, 'unknown') as category, count(*) as n_events
    from events
    left join items on events.item_id = items.item_id
    group by events.user_id, coalesce(items.category, 'unknown')
),

ranked_categories as (
    select
        *,
        row_number() over (partition by user_id order by n_events desc, category) as category_rank
    from category_events
),

top_categories as (
    select
        user_id,
        max(case when category_rank = 1 then category end) as top_category,
        string_agg(category, '|' order by category_rank) as top_categories
    from ranked_categories
    where category_rank <= 3
    group by user_id
),

final as (
    select
        activity.user_id,
        activity.n_events,
        activity.n_items,
        activity.n_views,
        activity.n_clicks,
        activity.n_add_to_cart,
        activity.n_purchases,
        activity.n_ratings,
        coalesce(session_counts.n_sessions, 0) as n_sessions,
        activity.n_active_days,
        activity.first_ts,
        activity.last_ts,
        case
            when activity.n_items < {{ var('cold_user_below') }} then 'cold'
            when activity.n_items <= {{ var('segment_power_above') }} then 'casual'
            else 'power'
        end as segment,
        top_categories.top_category,
        top_categories.top_categories
    from activity
    left join session_counts on activity.user_id = session_counts.user_id
    left join top_categories on activity.user_id = top_categories.user_id
)

select * from final
