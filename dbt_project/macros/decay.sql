{#- Exponential time decay: 1 at reference_ts, 0.5 one half-life earlier. -#}
{% macro decay(event_ts_column, reference_ts_column) -%}
    exp(-ln(2) * ({{ epoch_seconds(reference_ts_column) }} - {{ epoch_seconds(event_ts_column) }})
        / (86400.0 * {{ var('decay_half_life_days') }}))
{%- endmacro %}
