-- One row per user x day with eligible events: marts.user_features counts a user's active days from it.
-- Incremental per user like int_interaction_cells (macros/incremental_users.sql): a day's build adds the
-- day's events to their users' rows without reading anyone's history.
{{
    config(
        materialized='incremental',
        tags=['per_user_folding'],
        incremental_strategy='delete+insert',
        unique_key=['user_id', 'event_date'],
        pre_hook="{{ delete_users_out_of_step(ref('int_events_consented')) }}",
    )
}}
-- depends_on: {{ ref('int_user_event_digests') }}

with events as (
    select user_id, event_id, event_date, ingested_at
    from ({{ events_to_fold(ref('int_events_consented')) }}) as to_fold
),

folded as (
    select
        user_id,
        event_date,
        count(*) as n_events,
        sum({{ event_checksum('event_id') }}) as event_checksum,
        max(ingested_at) as max_ingested_at
    from events
    group by user_id, event_date
),

final as (
    {% if is_incremental() %}
    select
        folded.user_id,
        folded.event_date,
        folded.n_events + coalesce(held.n_events, 0) as n_events,
        folded.event_checksum + coalesce(held.event_checksum, 0) as event_checksum,
        greatest(folded.max_ingested_at, coalesce(held.max_ingested_at, folded.max_ingested_at)) as max_ingested_at
    from folded
    left join {{ this }} as held on folded.user_id = held.user_id and folded.event_date = held.event_date
    {% else %}
    select * from folded
    {% endif %}
)

select * from final
