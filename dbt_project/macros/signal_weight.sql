{#- The weight of one event by its type, from the weight_* vars (settings passed by pipelines/warehouse/transform.py;
    dbt_project.yml holds the same defaults). Used once, in interaction_events: every other reader takes
    the weight from that mart. -#}
{% macro signal_weight(event_type_column) -%}
    cast(case {{ event_type_column }}
        when 'purchase' then {{ var('weight_purchase') }}
        when 'add_to_cart' then {{ var('weight_add_to_cart') }}
        when 'click' then {{ var('weight_click') }}
        when 'rating' then {{ var('weight_rating') }}
        else {{ var('weight_view') }}
    end as double precision)
{%- endmacro %}
