{#- Fails on every combination of `columns` that appears more than once (the grain check). -#}
{% test unique_grain(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
