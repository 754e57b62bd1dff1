{#- Fails if any event of an earlier split is later than the first event of a later split. -#}
{% test no_lookahead_between_splits(model) %}
with bounds as (
    select
        split,
        min(first_ts) as starts,
        max(last_ts) as ends
    from {{ model }}
    group by split
),

ordered as (
    select
        case split when 'train' then 1 when 'valid' then 2 else 3 end as position,
        starts,
        ends
    from bounds
)

select earlier.position as earlier_split, later.position as later_split
from ordered as earlier
join ordered as later on earlier.position < later.position
where earlier.ends >= later.starts
{% endtest %}
