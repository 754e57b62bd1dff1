-- Turn one JSONL file's lines into `incoming`, the canonical rows classify_events.sql judges.
-- Input: `incoming_lines` (line_number, raw, read_error: what the line reader could not read; `split`
-- and the fields' texts: the lines of the usual shape, already split by the compiled pass of
-- pipelines/ingest/jsonl_fields.py, `value` as written, `context` minified as json_transform writes
-- it). A split line is well formed and well typed by construction, so it only takes the casts at the
-- end; every other line goes through the parse here.
-- Parameters: $structure is the JSON transform of every canonical field to its JSON text
-- ({"event_id": "JSON", ...}, built from serving.events.EVENT_FIELDS); $known_fields those names.
--
-- Why it is shaped like this: each document is validated (json_valid), transformed ONCE
-- (json_transform into a struct of the fields' JSON texts) and its keys listed once (json_keys, to
-- find keys outside the contract): three passes where one pass per question took five. A field's
-- JSON type and string value are read off its small text (the first character; a string without
-- escapes is its text between the quotes). Only rare rows pay more: an escaped string is unescaped
-- by json_extract_string, and a document with unknown keys is read again for the context merge
-- (CASE evaluates a branch only for the rows that take it). try(json_transform(...)) in place of
-- json_valid was measured 5x slower: a malformed line in a vector sends try() row by row.
-- Outcomes are those of one parse per question: malformed_json for text that is not JSON,
-- schema_mismatch for a document that is not an object or a field of the wrong JSON type.
create or replace temp table incoming as
with documents as (
    select
        line_number,
        raw,
        read_error,
        json_valid(raw) as valid,  -- a row the reader flagged keeps its fields too (pseudonyms need its user id)
        -- a valid document that is not an object (or is `null`) yields NULLs, hence is_object
        case when valid then json_transform(raw, $structure) end as doc,
        starts_with(ltrim(raw, e' \t\n\r'), '{') as is_object
    from incoming_lines
    where not split
),

fields as (
    select
        line_number,
        raw,
        read_error,
        not valid as malformed,
        is_object,
        doc.event_id::varchar as j_event_id,
        doc.user_id::varchar as j_user_id,
        doc.item_id::varchar as j_item_id,
        doc.event_type::varchar as j_event_type,
        doc.event_ts::varchar as j_event_ts,
        doc.value::varchar as j_value,
        doc.session_id::varchar as j_session_id,
        doc.context::varchar as j_context,
        -- the first character of a JSON text names its type: " string, { object, [ array, t/f boolean,
        -- anything else a number (digits, -, NaN, Infinity); JSON null came out as SQL NULL ('n' here)
        coalesce(left(j_event_id, 1), 'n') as k_event_id,
        coalesce(left(j_user_id, 1), 'n') as k_user_id,
        coalesce(left(j_item_id, 1), 'n') as k_item_id,
        coalesce(left(j_event_type, 1), 'n') as k_event_type,
        coalesce(left(j_event_ts, 1), 'n') as k_event_ts,
        coalesce(left(j_value, 1), 'n') as k_value,
        coalesce(left(j_session_id, 1), 'n') as k_session_id,
        coalesce(left(j_context, 1), 'n') as k_context
    from documents
),

texts as (
    -- a JSON scalar as text, as json_extract_string gives it: a string unquoted (unescaped), a number as written
    select
        *,
        case
            when k_event_id <> '"' then j_event_id
            when contains(j_event_id, '\') then json_extract_string(j_event_id, '$')
            else j_event_id[2:-2]
        end as v_event_id,
        case
            when k_user_id <> '"' then j_user_id
            when contains(j_user_id, '\') then json_extract_string(j_user_id, '$')
            else j_user_id[2:-2]
        end as v_user_id,
        case
            when k_item_id <> '"' then j_item_id
            when contains(j_item_id, '\') then json_extract_string(j_item_id, '$')
            else j_item_id[2:-2]
        end as v_item_id,
        case
            when k_event_type <> '"' then j_event_type
            when contains(j_event_type, '\') then json_extract_string(j_event_type, '$')
            else j_event_type[2:-2]
        end as v_event_type,
        case
            when k_event_ts <> '"' then j_event_ts
            when contains(j_event_ts, '\') then json_extract_string(j_event_ts, '$')
            else j_event_ts[2:-2]
        end as v_event_ts,
        case
            when k_value <> '"' then j_value
            when contains(j_value, '\') then json_extract_string(j_value, '$')
            else j_value[2:-2]
        end as v_value,
        case
            when k_session_id <> '"' then j_session_id
            when contains(j_session_id, '\') then json_extract_string(j_session_id, '$')
            else j_session_id[2:-2]
        end as v_session_id,
        case when k_context = '{' then j_context end as own_context
    from fields
)

select
    line_number,
    raw,
    case
        when read_error is not null then read_error
        when malformed then 'malformed_json'
        when not is_object then 'schema_mismatch'
        -- event_id, user_id, item_id: a string, a number or null; event_type, event_ts: a string or null;
        -- value: a number, null or a string that reads as one; context: an object or null
        when k_event_id in ('{', '[', 't', 'f') or k_user_id in ('{', '[', 't', 'f')
          or k_item_id in ('{', '[', 't', 'f')
          or k_event_type not in ('"', 'n') or k_event_ts not in ('"', 'n') or k_context not in ('{', 'n')
          or k_value in ('{', '[', 't', 'f') or (k_value = '"' and try_cast(v_value as double) is null)
            then 'schema_mismatch'
    end as parse_error,
    v_event_id as event_id,
    v_user_id as user_id,
    v_item_id as item_id,
    v_event_type as event_type,
    try_cast(v_event_ts as timestamptz) as event_ts,
    try_cast(v_value as double) as value,
    v_session_id as session_id,
    case
        when malformed or not is_object then null
        when list_has_all($known_fields, json_keys(raw)) then own_context
        else cast(json_merge_patch(
            coalesce(own_context, '{}')::json,
            to_json(map_from_entries(list_transform(
                -- each key outside the contract once (a key given twice keeps its first value, as
                -- json_transform does for the contract's keys), read by JSON pointer: a key may hold
                -- any character ('"', '.', '*'), only '~' and '/' are escaped in a pointer
                list_filter(
                    json_keys(raw),
                    lambda key, i: not list_contains($known_fields, key) and list_position(json_keys(raw), key) = i
                ),
                lambda key: {'key': key, 'value': json_extract(raw, '/' || replace(replace(key, '~', '~0'), '/', '~1'))}
            )))
        ) as varchar)
    end as context
from texts

union all

select
    line_number,
    raw,
    null as parse_error,
    event_id,
    user_id,
    item_id,
    event_type,
    try_cast(event_ts as timestamptz) as event_ts,
    try_cast(value as double) as value,
    session_id,
    context
from incoming_lines
where split
