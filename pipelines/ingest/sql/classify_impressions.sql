-- The impression rules: every served slate of the staged file `incoming_impressions` gets the first
-- reason it breaks (null: accepted). Parameters: landing day bounds, the id rules (serving/ids.py),
-- the request-id rule (serving/impressions/request_ids.py) and the endpoints (serving/impressions/format.py).
create or replace temp table classified_impressions as
with numbered as (
    -- a shadow slate shares its shown slate's request id: each is unique within its kind
    select *, row_number() over (partition by request_id, shadow order by row_number) as request_seen
    from incoming_impressions
)
select
    *,
    case
        when request_id is null or trim(request_id) = '' then 'missing_request_id'
        when not regexp_full_match(request_id, $request_id_regex) then 'bad_request_id'
        when request_seen > 1 then 'duplicate_request_id'
        when served_at is null then 'bad_timestamp'
        when served_at >= $latest_allowed then 'future_timestamp'
        when served_at < $earliest_allowed then 'outside_landing_day'
        when endpoint is null or not list_contains($endpoints, endpoint) then 'unknown_endpoint'
        when endpoint = 'recommendations' and (user_id is null or trim(user_id) = '') then 'missing_user_id'
        when endpoint = 'similar_items' and (anchor_item_id is null or trim(anchor_item_id) = '') then 'missing_item_id'
        when length(coalesce(user_id, anchor_item_id)) > $max_id_length then 'id_too_long'
        when not regexp_full_match(coalesce(user_id, anchor_item_id), $id_characters) then 'id_bad_characters'
        when version is null or trim(version) = '' then 'missing_version'
        when item_ids is null or scores is null or len(scores) <> len(item_ids)
            or (propensities is not null and len(propensities) <> len(item_ids)) then 'slate_mismatch'
        when list_count(item_ids) <> len(item_ids) or list_count(scores) <> len(scores) then 'slate_mismatch'
        when len(list_filter(item_ids, lambda i: length(i) > $max_id_length
            or not regexp_full_match(i, $id_characters))) > 0 then 'id_bad_characters'
        when propensities is not null and len(list_filter(propensities, lambda p: p is null or p <= 0 or p > 1)) > 0
            then 'bad_propensity'
    end as reason
from numbered
