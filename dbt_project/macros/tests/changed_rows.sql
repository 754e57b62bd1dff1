{#- Data tests in proportion to the day.

    A day's build adds a day's events to weeks of history, and a data test of an event-grain relation (unique
    event ids over 50M rows, relationships from every event) would check the whole history again every day.
    A row that passed a test in an earlier build of the same project, settings and dbt can only fail it now if
    the row's inputs changed. So the data tests of a model whose config names `meta: {tests_scope: ...}` check
    the rows that can have changed since the last build that passed every test (its record:
    data_tests_passed_through):
    - `ingested_at`: its rows ingested after it (the model holds int_events_deduped's ingested_at);
    - `event_id`: its rows of the events int_events_deduped received after it (an event-grain view without
      the column).
    A `unique` test checks every row whose key is among those rows' keys, so a new row that repeats a key of
    the history still fails. Every row is checked on a full refresh (forgetting and retention rebuild so), when
    the build's key differs from the record's (recforge passes a digest of the project's files, its vars and
    dbt's versions as var `tests_key`: any change of code, settings or dbt), with no record, or with no key (a
    `dbt build` run by hand). Like int_events_deduped's own watermark, this relies on ingestion times growing
    with every commit (one writer at a time: the warehouse pool). -#}

{#- dbt wraps the model of every generic test in this macro (its `where` config); the scope joins that. -#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}{%- do conditions.append('(' ~ where ~ ')') -%}{%- endif -%}
    {%- set changed = changed_rows_condition(relation) -%}
    {%- if changed -%}{%- do conditions.append('(' ~ changed ~ ')') -%}{%- endif -%}
    {%- if conditions -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ conditions | join(' and ') ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}

{#- The rows of `relation` the running test must check (see above), as a condition; none for every row. -#}
{% macro changed_rows_condition(relation) -%}
    {%- set tested = graph.nodes.get(model.get('attached_node')) if model.get('attached_node') else none -%}
    {%- set scope = tested.config.meta.get('tests_scope') if tested else none -%}
    {%- if scope is none -%}{%- do return(none) -%}{%- endif -%}
    {%- if scope not in ('ingested_at', 'event_id') -%}
        {%- do exceptions.raise_compiler_error("meta.tests_scope of " ~ tested.name ~ " is " ~ scope ~ "; valid: ingested_at, event_id") -%}
    {%- endif -%}
    {%- set passed_through = data_tests_passed_through() -%}
    {%- if passed_through is none -%}{%- do return(none) -%}{%- endif -%}
    {%- set new_events = "select * from " ~ node_relation('int_events_deduped') ~ " where ingested_at > cast('" ~ passed_through ~ "' as timestamp)" -%}
    {%- if scope == 'ingested_at' -%}
        {%- set rows = "ingested_at > cast('" ~ passed_through ~ "' as timestamp)" -%}
    {%- else -%}
        {#- The new events' first date as a literal too: a filter the scan of the history can apply itself. -#}
        {%- set first_date = run_query("select cast(min(event_date) as varchar) from (" ~ new_events ~ ") as new_events").columns[0].values()[0] -%}
        {%- set rows = "(event_date >= cast('" ~ (first_date or '9999-12-31') ~ "' as date) or event_date is null) and event_id in (select event_id from (" ~ new_events ~ ") as new_events)" -%}
    {%- endif -%}
    {%- if model.test_metadata and model.test_metadata.name == 'unique' -%}
        {#- Every row whose key one of those rows has: a new row repeating a key of the history still fails. -#}
        {%- set key = model.column_name -%}
        {%- do return(key ~ " in (select " ~ key ~ " from " ~ relation ~ " where " ~ rows ~ ")") -%}
    {%- endif -%}
    {%- do return(rows) -%}
{%- endmacro %}

{#- The relation a model of this project builds, by name (tests cannot ref() what they do not depend on). -#}
{% macro node_relation(name) -%}
    {%- set node = graph.nodes['model.' ~ project_name ~ '.' ~ name] -%}
    {%- do return(api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias)) -%}
{%- endmacro %}

{#- The key recforge passes (transform.DATA_TESTS_KEY_VAR); empty when none: every row is checked, nothing recorded. -#}
{% macro data_tests_key() -%}
    {%- do return(var('tests_key', '')) -%}
{%- endmacro %}

{#- Where the last build that passed every test is recorded (one row; dbt's own bookkeeping, no mart;
    transform.DATA_TESTS_RECORD). -#}
{% macro data_tests_record() -%}
    {%- do return(api.Relation.create(database=target.database, schema=target.schema, identifier='data_tests_passed_through')) -%}
{%- endmacro %}

{#- The newest ingestion time the last fully passing build with this key checked, as text; none if every row
    must be checked. -#}
{% macro data_tests_passed_through() -%}
    {%- if not execute or flags.FULL_REFRESH or not data_tests_key() -%}{%- do return(none) -%}{%- endif -%}
    {%- set record = data_tests_record() -%}
    {%- if adapter.get_relation(database=record.database, schema=record.schema, identifier=record.identifier) is none -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- set found = run_query("select cast(passed_through as varchar) from " ~ record ~ " where tests_key = '" ~ data_tests_key() ~ "'") -%}
    {%- do return(found.columns[0].values()[0] if found.rows | length > 0 else none) -%}
{%- endmacro %}

{#- on-run-start: say once which rows this build's data tests check. -#}
{% macro announce_data_tests_scope() -%}
    {%- if execute and flags.WHICH in ('build', 'test') -%}
        {%- set passed_through = data_tests_passed_through() -%}
        {%- if passed_through is none -%}
            {%- do log('data tests: every row (full refresh, changed project or settings, or no build has passed every test yet)', info=true) -%}
        {%- else -%}
            {%- do log('data tests: the rows ingested after ' ~ passed_through ~ ', which the last build with this project and settings passed', info=true) -%}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- on-run-end: a build of the whole project (no selection) in which every node passed records the newest
    ingestion time it built and tested, under its key; any other run leaves the record as it was. -#}
{% macro record_data_tests_passed(results) -%}
    {%- if execute and flags.WHICH == 'build' and data_tests_key() -%}
        {%- set selected = invocation_args_dict.get('select') or invocation_args_dict.get('exclude') -%}
        {%- set failed = results | rejectattr('status', 'in', ['success', 'pass', 'warn']) | list -%}
        {%- if not selected and results | length > 0 and failed | length == 0 -%}
            {%- set record = data_tests_record() -%}
            {%- set events = node_relation('int_events_deduped') -%}
            {#- One transaction (PostgreSQL commits nothing run_query does outside one). -#}
            {%- call statement('record_data_tests_passed', auto_begin=True) -%}
                create table if not exists {{ record }} (tests_key varchar(64), passed_through timestamp, recorded_at timestamp);
                delete from {{ record }};
                insert into {{ record }} select '{{ data_tests_key() }}', max(ingested_at), current_timestamp from {{ events }}
            {%- endcall -%}
            {%- do adapter.commit() -%}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}
