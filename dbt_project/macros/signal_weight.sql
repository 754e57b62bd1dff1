{#- The weight of one event by its type, from the weight_* vars in dbt_project.yml. -#}
{% macro signal_weight(event_type_column) -%}
    case {{ event_type_column }}
        when 'purchase' then {{ var('weight_purchase') }}
        when 'add_to_cart' then {{ var('weight_add_to_cart') }}
        when 'click' then {{ var('weight_click') }}
        when 'rating' then {{ var('weight_rating') }}
        else {{ var('weight_view') }}
    end
{%- endmacro %}
