-- One row per user x event date x batch of int_events_deduped: how many behavioural events (ratings are not
-- counted) the user has on that day in that batch. int_bot_users sums it per user and day instead of grouping
-- the whole deduplicated history every build.
-- Incremental in step with int_events_deduped, whose rows change only batch by batch (a re-ingested batch
-- replaces its own rows, delete+insert on batch_id): the batches ingested since the newest row here are
-- counted again and replace their rows, and every other batch's count still holds. A full refresh of the one
-- is a full refresh of the other (`dbt build --full-refresh`, which retention runs too); forgetting a user
-- deletes their rows here as in every table with a user_id.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='batch_id',
    )
}}

with events as (
    select * from {{ ref('int_events_deduped') }}
    {% if is_incremental() %}
    where ingested_at > {{ ingested_through(this, 'max_ingested_at') }}
    {% endif %}
),

final as (
    select
        user_id,
        event_date,
        batch_id,
        count(*) filter (where event_type <> 'rating') as n_behavioural_events,
        max(ingested_at) as max_ingested_at
    from events
    group by user_id, event_date, batch_id
)

select * from final
