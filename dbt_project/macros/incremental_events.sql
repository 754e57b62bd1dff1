{#- The incremental event grain (int_events_consented). A plain run must leave the same rows a full
    refresh would, while costing in proportion to what changed: the batches it has not seen and the
    users whose eligibility moved. The pre-hook deletes (delete_changed_consented_events), the model's
    query adds (its `is_incremental()` branch); both run in one transaction. -#}

{#- Batches whose rows this relation does not hold as ingested now: new batches, and re-ingested ones
    (a re-run keeps a batch's id and gives it a new ingested_at). -#}
{% macro unseen_event_batches(relation) -%}
    select batch_id, max(ingested_at) as ingested_at from {{ ref('int_events_deduped') }} group by batch_id
    except
    select batch_id, max(ingested_at) as ingested_at from {{ relation }} group by batch_id
{%- endmacro %}

{#- Before a plain run adds rows: drop the old version of every unseen batch (an event a corrected day no
    longer carries must go too), and every row of a user who is now a bot or now withholds consent. -#}
{% macro delete_changed_consented_events(relation) -%}
    {%- if is_incremental() -%}
    delete from {{ relation }}
    where batch_id in (select unseen.batch_id from ({{ unseen_event_batches(relation) }}) as unseen)
        or user_id in (select user_id from {{ ref('int_bot_users') }})
        or user_id in (select user_id from {{ ref('int_consent_withheld_users') }})
    {%- endif -%}
{%- endmacro %}
