with source as (
    select * from {{ source('raw', 'impression_items') }}
),

renamed as (
    select
        cast(request_id as varchar) as request_id,
        cast(served_at as timestamp) as served_at,
        cast(served_at as date) as served_date,
        cast(served_at as timestamp with time zone) as event_ts,
        cast(endpoint as varchar) as endpoint,
        cast(user_id as varchar) as user_id,
        cast(anchor_item_id as varchar) as anchor_item_id,
        fallback,
        cast(version as varchar) as publication_version,
        cast(experiment as varchar) as experiment,
        cast(variant as varchar) as variant,
        cast(slate_size as integer) as slate_size,
        cast(position as integer) as position,
        cast(item_id as varchar) as item_id,
        cast(score as double precision) as score,
        cast(propensity as double precision) as propensity,
        coalesce(shadow, false) as shadow,
        batch_id,
        landing_date,
        cast(ingested_at as timestamp) as ingested_at
    from source
)

select * from renamed
