{#- Use the layer's schema name as written (staging, intermediate, marts) rather than
    dbt's default "<target schema>_<custom schema>", so every target has the same names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
