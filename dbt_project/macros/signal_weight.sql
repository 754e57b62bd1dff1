{#- The weight of one event by its type, from the weight_* vars (settings passed by pipelines/warehouse/transform.py;
    dbt_project.yml holds the same defaults). Used by interaction_events, the event grain every reader outside
    dbt takes weights from, and by int_interaction_cells, which folds the same weights per pair. -#}
{% macro signal_weight(event_type_column) -%}
    cast(case {{ event_type_column }}
        when 'purchase' then {{ var('weight_purchase') }}
        when 'add_to_cart' then {{ var('weight_add_to_cart') }}
        when 'click' then {{ var('weight_click') }}
        when 'rating' then {{ var('weight_rating') }}
        else {{ var('weight_view') }}
    end as double precision)
{%- endmacro %}
