-- One row per shown item of a served slate (request x position), with what was done with it within
-- the attribution window: clicked, added to cart, converted (purchased) and the revenue of those
-- purchases. An outcome counts when it is an accepted, non-bot event on the same item that names the
-- slate's request_id in its context and happens in [served_at, served_at + attribution_window_hours).
with impressions as (
    select * from {{ ref('int_impression_items_deduped') }}
),

events as (
    select * from {{ ref('int_events_without_bots') }}
),

outcomes as (
    select
        {{ json_text('context', 'request_id') }} as request_id,
        item_id,
        event_type,
        event_ts,
        event_value
    from events
    where event_type in ('click', 'add_to_cart', 'purchase')
),

attributed as (
    select
        impressions.request_id,
        impressions.position,
        max(case when outcomes.event_type = 'click' then 1 else 0 end) as clicked,
        max(case when outcomes.event_type = 'add_to_cart' then 1 else 0 end) as added_to_cart,
        max(case when outcomes.event_type = 'purchase' then 1 else 0 end) as converted,
        sum(case when outcomes.event_type = 'purchase' then coalesce(outcomes.event_value, 0) else 0 end) as revenue
    from impressions
    inner join outcomes
        on outcomes.request_id = impressions.request_id
        and outcomes.item_id = impressions.item_id
        and outcomes.event_ts >= impressions.served_at
        and outcomes.event_ts < impressions.served_at + {{ hours(var('attribution_window_hours')) }}
    group by impressions.request_id, impressions.position
),

final as (
    select
        impressions.request_id,
        impressions.position,
        impressions.served_at,
        impressions.served_date,
        impressions.event_ts,
        impressions.endpoint,
        impressions.user_id,
        impressions.anchor_item_id,
        impressions.fallback,
        impressions.publication_version,
        impressions.experiment,
        impressions.variant,
        impressions.slate_size,
        impressions.item_id,
        impressions.score,
        impressions.propensity,
        true as shown,
        coalesce(attributed.clicked, 0) = 1 as clicked,
        coalesce(attributed.added_to_cart, 0) = 1 as added_to_cart,
        coalesce(attributed.converted, 0) = 1 as converted,
        coalesce(attributed.revenue, 0) as revenue
    from impressions
    left join attributed
        on impressions.request_id = attributed.request_id
        and impressions.position = attributed.position
)

select * from final
