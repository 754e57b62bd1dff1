{#- The time cuts of marts.interactions_split, one row: the snapshot (the latest event), the test window's
    start (test_days before it) and the valid window's start (valid_days before that), from `cells` (a relation or
    the name of a CTE over int_interaction_cells): both halves of the mart call it, so they cut alike. -#}
{% macro split_cutoffs(cells) -%}
    select
        max(last_ts) as snapshot_ts,
        max(last_ts) - {{ days(var('test_days')) }} as test_start,
        max(last_ts) - {{ days(var('test_days') ~ ' + ' ~ var('valid_days')) }} as valid_start
    from {{ cells }}
{%- endmacro %}
