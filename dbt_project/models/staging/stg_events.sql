with source as (
    select * from {{ source('raw', 'events') }}
),

renamed as (
    select
        cast(event_id as varchar) as event_id,
        cast(user_id as varchar) as user_id,
        cast(item_id as varchar) as item_id,
        cast(event_type as varchar) as event_type,
        cast(event_ts as timestamp) as event_ts,
        cast(event_ts as date) as event_date,
        cast(value as double precision) as event_value,
        session_id,
        context,
        {{ consent_personalization('context') }} as consent_personalization,
        source,
        batch_id,
        landing_date,
        cast(ingested_at as timestamp) as ingested_at
    from source
)

select * from renamed
