-- One row per request id x position of a shown slate: a request id seen in two impression files (an app
-- that reused its own X-Request-ID across days) keeps its first arrival (earliest landing day, then batch
-- id). Shadow slates (never shown) stay out; off-policy evaluation reads them from raw.impression_items.
with impressions as (
    select * from {{ ref('stg_impression_items') }}
    where shadow is not true
),

first_batch as (
    select request_id, min(cast(landing_date as varchar) || '|' || batch_id) as first_arrival
    from impressions
    group by request_id
),

final as (
    select impressions.*
    from impressions
    inner join first_batch
        on impressions.request_id = first_batch.request_id
        and cast(impressions.landing_date as varchar) || '|' || impressions.batch_id = first_batch.first_arrival
)

select * from final
