-- One row per user: how active, since when, in which segment, and which categories they prefer.
-- Segments by distinct items interacted with: cold below cold_user_below, power above
-- segment_power_above, casual between (vars from the settings evaluation reports metrics by and
-- publication uses for its cold-user blend; defaults 5 and 50).
-- Built from the per-user incremental tables (pairs, sessions, active days), never from the event log:
-- a user's pairs are far fewer than their events, and the catalog's categories are read fresh every build.
with cells as (
    select * from {{ ref('int_interaction_cells') }}
),

items as (
    select * from {{ ref('stg_items') }}
),

sessions as (
    select * from {{ ref('int_sessions') }}
),

active_days as (
    select * from {{ ref('int_user_active_days') }}
),

activity as (
    select
        user_id,
        cast(sum(n_events) as bigint) as n_events,
        count(*) as n_items,
        cast(sum(n_views) as bigint) as n_views,
        cast(sum(n_clicks) as bigint) as n_clicks,
        cast(sum(n_add_to_cart) as bigint) as n_add_to_cart,
        cast(sum(n_purchases) as bigint) as n_purchases,
        cast(sum(n_ratings) as bigint) as n_ratings,
        min(first_ts) as first_ts,
        max(last_ts) as last_ts
    from cells
    group by user_id
),

session_counts as (
    select user_id, count(*) as n_sessions from sessions group by user_id
),

active_day_counts as (
    select user_id, count(*) as n_active_days from active_days group by user_id
),

category_events as (
    select cells.user_id, coalesce(items.category, 'unknown') as category, sum(cells.n_events) as n_events
    from cells
    left join items on cells.item_id = items.item_id
    group by cells.user_id, coalesce(items.category, 'unknown')
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
        active_day_counts.n_active_days,
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
    left join active_day_counts on activity.user_id = active_day_counts.user_id
    left join top_categories on activity.user_id = top_categories.user_id
)

select * from final
