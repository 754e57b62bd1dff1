-- One row per item (every catalog item, and any item seen in events but missing from the
-- catalog): what it is, how old, how popular over 1/7/30 days, and how well it converts.
-- Windows end at the snapshot (the latest event), so the mart is the same whenever it is built.
with events as (
    select item_id, event_ts from {{ ref('interaction_events') }}
),

cells as (
    select * from {{ ref('int_interaction_cells') }}
),

items as (
    select * from {{ ref('stg_items') }}
),

snapshot as (
    select max(last_ts) as snapshot_ts from cells
),

recent as (
    -- The windowed counts need each event's time; everything else comes from the pairs, which a day's build
    -- keeps up to date without reading the history (distinct users are the item's pairs).
    select
        events.item_id,
        count(*) filter (where events.event_ts > snapshot.snapshot_ts - {{ days(1) }}) as events_1d,
        count(*) filter (where events.event_ts > snapshot.snapshot_ts - {{ days(7) }}) as events_7d,
        count(*) as events_30d
    from events
    cross join snapshot
    where events.event_ts > snapshot.snapshot_ts - {{ days(30) }}
    group by events.item_id
),

totals as (
    select
        item_id,
        cast(sum(n_events) as bigint) as events_total,
        count(*) as users_total,
        cast(sum(n_views) as bigint) as n_views,
        cast(sum(n_purchases) as bigint) as n_purchases,
        min(first_ts) as first_seen_ts,
        max(last_ts) as last_seen_ts
    from cells
    group by item_id
),

activity as (
    select totals.*, recent.events_1d, recent.events_7d, recent.events_30d
    from totals
    left join recent on totals.item_id = recent.item_id
),

all_items as (
    select item_id from items
    union
    select item_id from activity
),

final as (
    select
        all_items.item_id,
        items.title,
        -- Item text for content models (models/content.py): cold items are known by it alone.
        items.description,
        -- As the catalog gives it: null means unknown, and readers decide what that means
        -- (publication's rules treat it as the category 'unknown'; validation counts the gaps).
        items.category,
        items.seller,
        items.price,
        coalesce(items.in_stock, false) as in_stock,
        coalesce(items.is_blocked, false) as is_blocked,
        items.item_id is not null as in_catalog,
        items.created_at,
        items.attributes,
        ({{ epoch_seconds('snapshot.snapshot_ts') }}
            - {{ epoch_seconds('coalesce(items.created_at, activity.first_seen_ts, snapshot.snapshot_ts)') }})
            / 86400.0 as age_days,
        coalesce(activity.events_1d, 0) as events_1d,
        coalesce(activity.events_7d, 0) as events_7d,
        coalesce(activity.events_30d, 0) as events_30d,
        coalesce(activity.events_total, 0) as events_total,
        coalesce(activity.users_total, 0) as users_total,
        coalesce(activity.n_views, 0) as n_views,
        coalesce(activity.n_purchases, 0) as n_purchases,
        case
            when coalesce(activity.n_views, 0) > 0 then cast(activity.n_purchases as double precision) / activity.n_views
        end as conversion_rate,
        activity.first_seen_ts,
        activity.last_seen_ts
    from all_items
    cross join snapshot
    left join items on all_items.item_id = items.item_id
    left join activity on all_items.item_id = activity.item_id
)

select * from final
