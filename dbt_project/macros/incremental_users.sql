{#- Per-user incremental aggregates (int_interaction_cells, int_user_active_days, int_sessions).

    A day's build must cost in proportion to the day, yet a user's rows can change for reasons a day's new
    events do not show: a re-ingested batch, a consent or bot flag reaching back into history, an erasure, a
    changed weight or decay setting. So each such model keeps, on every row, how many events it folded in, a
    checksum of their ids and the newest ingested_at among them; before a plain build, a user whose rows plus
    the events ingested since do not add up to int_user_event_digests (their eligible events now) loses their
    rows (pre-hook) and is rebuilt from their whole history. Everyone else folds in only the new events.
    A mistake in the watermark costs time, never correctness: the check catches any event folded twice or missed. -#}

{#- One event's share of a checksum: a hash of its id and of every setting an aggregate's values depend on,
    so a changed setting changes every checksum and rebuilds every user. Summed, so it adds up across rows.
    (A DuckDB release that changed hash() would rebuild everyone once: slower, still right.) -#}
{% macro event_checksum(event_id_column) -%}
    {%- set built_with = [var('weight_view'), var('weight_click'), var('weight_add_to_cart'), var('weight_purchase'),
                          var('weight_rating'), var('decay_half_life_days'), var('session_gap_minutes')] | join('|') -%}
    {%- if target.type == 'postgres' -%} cast(hashtext({{ event_id_column }} || '|{{ built_with }}') as bigint)
    {%- else -%} hash({{ event_id_column }}, '{{ built_with }}') {%- endif -%}
{%- endmacro %}

{#- The newest ingested_at the model has folded in (macros/watermark.sql). -#}
{% macro folded_through(relation) -%}
    {{ ingested_through(relation, 'max_ingested_at') }}
{%- endmacro %}

{#- Users whose rows in `relation` plus their events ingested after `watermark` are not their eligible events
    now (or who have none any more): their rows must go and be rebuilt from their whole history. -#}
{% macro users_out_of_step(relation, events, watermark) -%}
    select folded.user_id
    from (
        select user_id, sum(n_events) as n_events, sum(event_checksum) as event_checksum
        from {{ relation }}
        group by user_id
    ) as folded
    left join {{ ref('int_user_event_digests') }} as digests on folded.user_id = digests.user_id
    left join (
        select user_id, count(*) as n_events, sum({{ event_checksum('event_id') }}) as event_checksum
        from {{ events }}
        where ingested_at > {{ watermark }}
        group by user_id
    ) as appended on folded.user_id = appended.user_id
    where digests.user_id is null
        or digests.n_events <> folded.n_events + coalesce(appended.n_events, 0)
        or digests.event_checksum <> folded.event_checksum + coalesce(appended.event_checksum, 0)
{%- endmacro %}

{#- The pre-hook of a per-user incremental model: drop the rows of users out of step (a plain build only). -#}
{% macro delete_users_out_of_step(events) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where user_id in ({{ users_out_of_step(this, events, folded_through(this)) }})
    {%- endif -%}
{%- endmacro %}

{#- The events a per-user incremental model folds in: on a full build all of them; on a plain build the events
    ingested after the watermark, except those of users whose rows must be rebuilt from their whole history,
    and all the events of those. A user needs their history when they have no rows here (new, or dropped by
    delete_users_out_of_step) and their events are not all new; on a usual day that is nobody, and the join on
    an empty set ends the scan of the history at once. Two disjoint parts, so no event is folded twice. -#}
{% macro events_to_fold(events) -%}
    {%- if is_incremental() -%}
        {%- set watermark = folded_through(this) -%}
        with appended as (
            select user_id, count(*) as n_events
            from {{ events }}
            where ingested_at > {{ watermark }}
            group by user_id
        ),

        history_needed as (
            select digests.user_id
            from {{ ref('int_user_event_digests') }} as digests
            left join appended on digests.user_id = appended.user_id
            where digests.n_events <> coalesce(appended.n_events, 0)
                and digests.user_id not in (select user_id from {{ this }})
        )

        select events.* from {{ events }} as events
        where events.ingested_at > {{ watermark }}
            and events.user_id not in (select user_id from history_needed)
        union all
        select events.* from {{ events }} as events
        where events.user_id in (select user_id from history_needed)
    {%- else -%}
        select * from {{ events }}
    {%- endif -%}
{%- endmacro %}

{#- on-run-start: a per-user incremental model's (tag per_user_folding) table from before it folded per user (int_sessions was a plain
    table) has no checksums to check against, and a plain build would merge into it unchecked; drop it so the
    build makes it anew. Once, on the first build after the upgrade. adapter.drop_relation, not a statement: dbt's
    cache of relations must forget the table too, or the model would still take the plain-build path. -#}
{% macro drop_tables_built_before_per_user_folding() -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values()
                if node.resource_type == 'model' and 'per_user_folding' in node.tags -%}
            {%- set relation = adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) -%}
            {%- if relation is not none and 'event_checksum' not in adapter.get_columns_in_relation(relation) | map(attribute='name') | list -%}
                {%- do log('dropping ' ~ relation ~ ': built before per-user folding, rebuilt now', info=true) -%}
                {%- do adapter.drop_relation(relation) -%}
                {%- do adapter.commit() -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
