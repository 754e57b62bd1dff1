{#- SQL that DuckDB and PostgreSQL spell differently, so the same models build on both targets. -#}

{#- Seconds since the epoch of a timestamp. -#}
{% macro epoch_seconds(ts) -%}
    {%- if target.type == 'postgres' -%} extract(epoch from {{ ts }}) {%- else -%} epoch({{ ts }}) {%- endif -%}
{%- endmacro %}

{#- An interval of n days (n may be an expression). -#}
{% macro days(n) -%}
    {%- if target.type == 'postgres' -%} (interval '1 day' * ({{ n }})) {%- else -%} to_days({{ n }}) {%- endif -%}
{%- endmacro %}

{#- An interval of n hours (n may be an expression). -#}
{% macro hours(n) -%}
    {%- if target.type == 'postgres' -%} (interval '1 hour' * ({{ n }})) {%- else -%} to_hours(cast({{ n }} as bigint)) {%- endif -%}
{%- endmacro %}

{#- The text of one top-level key of a JSON column (null when absent). -#}
{% macro json_text(column, key) -%}
    {%- if target.type == 'postgres' -%} (cast({{ column }} as json) ->> '{{ key }}')
    {%- else -%} json_extract_string({{ column }}, '$.{{ key }}') {%- endif -%}
{%- endmacro %}
