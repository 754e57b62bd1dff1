with source as (
    select * from {{ source('raw', 'items') }}
),

renamed as (
    select
        cast(item_id as varchar) as item_id,
        title,
        {{ json_text('attributes', 'description') }} as description,
        category,
        cast(price as double precision) as price,
        coalesce(in_stock, false) as in_stock,
        coalesce(is_blocked, false) as is_blocked,
        cast(created_at as timestamp) as created_at,
        cast(attributes as varchar) as attributes,
        {{ json_text('attributes', 'seller') }} as seller
    from source
)

select * from renamed
