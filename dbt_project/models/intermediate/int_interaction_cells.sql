-- One row per user x item: the pair's events folded into a weight that a new event updates without the old
-- ones, so a day's build touches only the pairs of the day (macros/incremental_users.sql).
-- The weight is anchored at weight_reference_ts: sum(signal weight x decay(event_ts -> weight_reference_ts));
-- marts.interactions moves it to the snapshot with one more factor of the same decay. Two foldings merge by
-- moving both to the later reference and adding. On a full build the reference is the snapshot itself, so the
-- mart's weights are what summing each event's decay to the snapshot gives.
{{
    config(
        materialized='incremental',
        tags=['per_user_folding'],
        incremental_strategy='delete+insert',
        unique_key=['user_id', 'item_id'],
        pre_hook="{{ delete_users_out_of_step(ref('int_events_consented')) }}",
    )
}}
-- depends_on: {{ ref('int_user_event_digests') }}

with events as (
    select
        user_id,
        item_id,
        event_id,
        event_type,
        event_ts,
        ingested_at,
        {{ signal_weight('event_type') }} as weight
    from ({{ events_to_fold(ref('int_events_consented')) }}) as to_fold
),

reference as (
    select max(event_ts) as reference_ts from events
),

folded as (
    select
        events.user_id,
        events.item_id,
        sum(events.weight * {{ decay('events.event_ts', 'reference.reference_ts') }}) as weight_at_reference,
        max(reference.reference_ts) as weight_reference_ts,
        count(*) as n_events,
        count(*) filter (where events.event_type = 'view') as n_views,
        count(*) filter (where events.event_type = 'click') as n_clicks,
        count(*) filter (where events.event_type = 'add_to_cart') as n_add_to_cart,
        count(*) filter (where events.event_type = 'purchase') as n_purchases,
        count(*) filter (where events.event_type = 'rating') as n_ratings,
        min(events.event_ts) as first_ts,
        max(events.event_ts) as last_ts,
        sum({{ event_checksum('events.event_id') }}) as event_checksum,
        max(events.ingested_at) as max_ingested_at
    from events
    cross join reference
    group by events.user_id, events.item_id
),

{% if is_incremental() %}
paired as (
    select
        folded.*,
        held.weight_at_reference as held_weight_at_reference,
        held.weight_reference_ts as held_weight_reference_ts,
        held.n_events as held_n_events,
        held.n_views as held_n_views,
        held.n_clicks as held_n_clicks,
        held.n_add_to_cart as held_n_add_to_cart,
        held.n_purchases as held_n_purchases,
        held.n_ratings as held_n_ratings,
        held.first_ts as held_first_ts,
        held.last_ts as held_last_ts,
        held.event_checksum as held_event_checksum,
        held.max_ingested_at as held_max_ingested_at,
        greatest(folded.weight_reference_ts, coalesce(held.weight_reference_ts, folded.weight_reference_ts))
            as merged_reference_ts
    from folded
    left join {{ this }} as held on folded.user_id = held.user_id and folded.item_id = held.item_id
),

merged as (
    -- A pair held already: both weights moved to the later of their references and added; counts added.
    select
        user_id,
        item_id,
        weight_at_reference * {{ decay('weight_reference_ts', 'merged_reference_ts') }}
            + coalesce(held_weight_at_reference * {{ decay('held_weight_reference_ts', 'merged_reference_ts') }}, 0)
            as weight_at_reference,
        merged_reference_ts as weight_reference_ts,
        n_events + coalesce(held_n_events, 0) as n_events,
        n_views + coalesce(held_n_views, 0) as n_views,
        n_clicks + coalesce(held_n_clicks, 0) as n_clicks,
        n_add_to_cart + coalesce(held_n_add_to_cart, 0) as n_add_to_cart,
        n_purchases + coalesce(held_n_purchases, 0) as n_purchases,
        n_ratings + coalesce(held_n_ratings, 0) as n_ratings,
        least(first_ts, coalesce(held_first_ts, first_ts)) as first_ts,
        greatest(last_ts, coalesce(held_last_ts, last_ts)) as last_ts,
        event_checksum + coalesce(held_event_checksum, 0) as event_checksum,
        greatest(max_ingested_at, coalesce(held_max_ingested_at, max_ingested_at)) as max_ingested_at
    from paired
),
{% endif %}

final as (
    select * from {% if is_incremental() %} merged {% else %} folded {% endif %}
)

select * from final
