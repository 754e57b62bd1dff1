{#- The consent contract (serving/events.py, CONSENT_PATH): context.consent.personalization as a
    boolean, null when the event carries no consent signal. JSON true/false (or the strings
    "true"/"false", any case) are read; any other value is no signal. DuckDB and PostgreSQL spell the
    JSON path differently. -#}
{% macro consent_personalization(context_column) -%}
    {%- if target.type == 'postgres' -%}
        {%- set text = "(cast(" ~ context_column ~ " as json) -> 'consent' ->> 'personalization')" -%}
    {%- else -%}
        {%- set text = "json_extract_string(" ~ context_column ~ ", '$.consent.personalization')" -%}
    {%- endif -%}
    case lower({{ text }}) when 'true' then true when 'false' then false end
{%- endmacro %}
