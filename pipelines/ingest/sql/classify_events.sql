-- Give every incoming row of one batch exactly one outcome: a reason code, or none (accepted).
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
-- Each rule works on the narrow columns it needs and yields (line_number, reason) for the rows it
-- rejects; `classified` holds only those pairs (the rejected rows), and the inserts join them back to
-- the wide rows of `incoming` (raw text, context) once, each reading only what it writes. Sorting,
-- hashing and materialising only narrow rows is what keeps a batch near DuckDB's own read rate.
-- line_number is unique within a batch (every adapter numbers its rows), so it is the join key.
create or replace temp table classified as  -- (line_number, reason): the rejected rows only
with row_rules as (
    select
        line_number,
        event_id,
        user_id,
        item_id,
        event_type,
        event_ts,
        case
            when parse_error is not null then parse_error
            -- blank = only spaces (what trim() removes); ltrim's length says it without building trim's copy
            when event_id is null or length(ltrim(event_id)) = 0 then 'missing_event_id'
            when user_id is null or length(ltrim(user_id)) = 0 then 'missing_user_id'
            when item_id is null or length(ltrim(item_id)) = 0 then 'missing_item_id'
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

passed_row_rules as (
    select line_number, event_id, user_id, item_id, event_type, event_ts
    from row_rules
    where row_reason is null
),

-- Event ids already accepted from an earlier landing day (a re-delivery, or a reused id) by another batch.
accepted_before as (
    select distinct raw_events.event_id
    from raw.events as raw_events
    where raw_events.landing_date < $landing_date
      and raw_events.batch_id <> $batch_id  -- a re-run replaces its own earlier rows
      and raw_events.event_id in (select event_id from passed_row_rules)
),

-- The first line of each event id keeps it; every later line with that id is a duplicate.
first_line_of_id as (
    select event_id, min(line_number) as first_line
    from passed_row_rules
    group by event_id
),

deduplicated as (
    select
        passed_row_rules.*,
        accepted_before.event_id is not null or passed_row_rules.line_number > first_line_of_id.first_line
            as is_duplicate
    from passed_row_rules
    inner join first_line_of_id on passed_row_rules.event_id = first_line_of_id.event_id
    left join accepted_before on passed_row_rules.event_id = accepted_before.event_id
),

unique_events as (
    select * from deduplicated where not is_duplicate
),

per_minute as (
    -- the UTC minute as a number: date_trunc on a timestamptz goes through the ICU calendar (5x the cost)
    select user_id, fdiv(epoch_us(event_ts), 60000000) as minute, count(*) as n_events
    from unique_events
    where event_type <> 'rating'
    group by all
),

bots as (
    select distinct user_id from per_minute where n_events > $bot_max_events_per_minute
),

human_events as (
    select unique_events.*
    from unique_events
    left join bots on unique_events.user_id = bots.user_id
    where bots.user_id is null
),

retries as (
    select line_number
    from (
        select
            line_number,
            event_ts - lag(event_ts) over (
                partition by user_id, item_id, event_type order by event_ts, line_number
            ) as since_previous
        from human_events
    ) as gaps
    where since_previous < interval 1 second
),

reasons as (
    select line_number, row_reason as reason from row_rules where row_reason is not null
    union all
    select line_number, 'duplicate_event_id' as reason from deduplicated where is_duplicate
    union all
    select unique_events.line_number, 'bot_suspected' as reason
    from unique_events
    inner join bots on unique_events.user_id = bots.user_id
    union all
    select line_number, 'retry_duplicate' as reason from retries
)

select line_number, reason from reasons
