-- What the `marts` checkpoint validates of marts.interactions, computed where the mart lives (DuckDB or
-- PostgreSQL): one row per user, so Great Expectations sees as many rows as there are users, never one
-- per interaction (25.7M at a million users, where GX's pandas engine took 30-70 s and up to 7 GB).
-- Each column is what one expectation of the suite `marts_interactions` reads:
--   n_rows          the user's interactions; their sum is the mart's row count (the band around the last run)
--   min_weight      every weight > 0 (NULLs pass, as in a row-level check)
--   min_n_events    every interaction stands on at least one event
--   repeated_items  the mart's grain: a user-item pair more than once (0 for every user)
select
    user_id,
    count(*) as n_rows,
    min(weight) as min_weight,
    min(n_events) as min_n_events,
    count(item_id) - count(distinct item_id) as repeated_items
from marts.interactions
group by user_id
