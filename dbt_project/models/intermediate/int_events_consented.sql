-- The events every mart is built from: deduplicated, no bots, and no user who withheld consent
-- for personalisation (int_consent_withheld_users). The excluded events are counted in
-- marts.consent_withheld_users, never dropped silently.
--
-- Incremental, so a day's build costs in proportion to the day, not to the history: a plain run
-- first deletes the old version of every batch it has not seen as ingested now and every row of a
-- user now flagged as a bot or now withholding consent (the pre-hook, macros/incremental_events.sql),
-- then adds the eligible events of those unseen batches, and every event of an eligible user it holds
-- no row of: consent given again, or a bot flag a corrected day lifted, brings the whole history back.
-- Forgetting a user and retention rebuild it with --full-refresh, as they do int_events_deduped.
-- depends_on: {{ ref('int_events_deduped') }}
-- depends_on: {{ ref('int_bot_users') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_changed_consented_events(this) }}",
    )
}}

with events as (
    select * from {{ ref('int_events_without_bots') }}
),

withheld as (
    select * from {{ ref('int_consent_withheld_users') }}
),

eligible as (
    select events.*
    from events
    left join withheld on events.user_id = withheld.user_id
    where withheld.user_id is null
),

{% if is_incremental() %}
-- After the pre-hook: exactly the batches it deleted (and any whose events all belong to excluded users).
unseen as (
    {{ unseen_event_batches(this) }}
),

held_users as (
    select distinct user_id from {{ this }}
),

returning_users as (
    select distinct eligible.user_id
    from eligible
    left join held_users on eligible.user_id = held_users.user_id
    where held_users.user_id is null
),
{% endif %}

final as (
    select eligible.*
    from eligible
    {% if is_incremental() %}
    where eligible.batch_id in (select batch_id from unseen)
        or eligible.user_id in (select user_id from returning_users)
    {% endif %}
)

select * from final
