{#- Fails on every non-null value outside [low, high]; a bound left out is not checked. -#}
{% test value_between(model, column_name, low=none, high=none) %}
select {{ column_name }}
from {{ model }}
where {% if low is not none %}{{ column_name }} < {{ low }}{% else %}false{% endif %}
   or {% if high is not none %}{{ column_name }} > {{ high }}{% else %}false{% endif %}
{% endtest %}
