-- Give every incoming row of one batch exactly one outcome: a reason code, or NULL (accepted).
-- Parameters: $event_types is pipelines.contract.EVENT_TYPES, the one list of known event types;
-- $max_id_length and $id_characters are the id contract of serving/ids.py (MAX_ID_LENGTH,
-- ID_CHARACTERS_REGEX), so ingest, the publisher and the API apply one rule set.
-- Input: temp table `incoming` (the canonical columns an adapter produced, see pipelines/ingest/sources.py).
-- Rules are applied in order and the first one that fails wins, so each row has one reason:
--   1. what the adapter could not read (line_too_long, malformed_row, malformed_json, invalid_utf8,
--      schema_mismatch)
--   2. row rules: missing ids, user / item ids outside the id contract (too long, bad characters;
--      never trimmed), unknown event type, a value that is NaN or infinite, unparseable / future /
--      too-late timestamp
--   3. duplicate_event_id: the same event id earlier in this batch, or accepted from an earlier landing day
--   4. bot_suspected: a user above $bot_max_events_per_minute behavioural events (not ratings: people
--      rate films in bulk, MovieLens users rate dozens a minute) in any minute loses all its rows in the batch
--   5. retry_duplicate: same user, item and event type less than a second after the previous one
create or replace temp table classified as
with row_rules as (
    select
        *,
        case
            when parse_error is not null then parse_error
            when event_id is null or trim(event_id) = '' then 'missing_event_id'
            when user_id is null or trim(user_id) = '' then 'missing_user_id'
            when item_id is null or trim(item_id) = '' then 'missing_item_id'
            when length(user_id) > $max_id_length or length(item_id) > $max_id_length then 'id_too_long'
            when not regexp_full_match(user_id, $id_characters) or not regexp_full_match(item_id, $id_characters)
                then 'id_bad_characters'
            when event_type is null or not list_contains($event_types, event_type)
                then 'unknown_event_type'
            when value is not null and not isfinite(value) then 'non_finite_value'
            when event_ts is null then 'bad_timestamp'
            when event_ts > $latest_allowed then 'future_timestamp'
            when event_ts < $earliest_allowed then 'late_beyond_window'
        end as row_reason
    from incoming
),

-- Event ids already accepted from an earlier landing day (a re-delivery, or a reused id) by another batch.
accepted_before as (
    select distinct raw_events.event_id
    from raw.events as raw_events
    where raw_events.landing_date < $landing_date
      and raw_events.batch_id <> $batch_id  -- a re-run replaces its own earlier rows
      and raw_events.event_id in (select event_id from row_rules where row_reason is null)
),

deduplicated as (
    select
        row_rules.*,
        case
            when row_reason is not null then row_reason
            when accepted_before.event_id is not null then 'duplicate_event_id'
            when row_number() over (partition by row_rules.event_id, row_reason is null order by line_number) > 1
                then 'duplicate_event_id'
        end as dedup_reason
    from row_rules
    left join accepted_before on row_rules.event_id = accepted_before.event_id
),

per_minute as (
    select user_id, date_trunc('minute', event_ts) as minute, count(*) as n_events
    from deduplicated
    where dedup_reason is null and event_type <> 'rating'
    group by all
),

bots as (
    select distinct user_id from per_minute where n_events > $bot_max_events_per_minute
),

bot_checked as (
    select
        deduplicated.*,
        case
            when dedup_reason is not null then dedup_reason
            when bots.user_id is not null then 'bot_suspected'
        end as bot_reason
    from deduplicated
    left join bots on deduplicated.user_id = bots.user_id
),

retry_checked as (
    select
        *,
        case
            when bot_reason is not null then bot_reason
            when event_ts - lag(event_ts) over (
                partition by user_id, item_id, event_type, bot_reason is null order by event_ts, line_number
            ) < interval 1 second then 'retry_duplicate'
        end as reason
    from bot_checked
)

select
    line_number,
    raw,
    reason,
    event_id,
    user_id,
    item_id,
    event_type,
    event_ts,
    value,
    session_id,
    context
from retry_checked
