-- What the `publication` checkpoint validates, computed over the written lists (user_recs.parquet)
-- in DuckDB: one row per user, so Great Expectations sees as many rows as there are users, never
-- one per listed item (100M at 1M users x 100), and no listed row passes through Python.
-- Parameters: $lists is the Parquet file of the lists (user_id, item_id, rank); $head is
-- settings.category_cap_head. Tables: `publication_items` (item_id, category, in_stock, is_blocked;
-- unique item_id) and `publication_purchased` (user_id, item_id), registered by the caller.
-- An item the catalog lacks counts as blocked and out of stock (it cannot be shown safely).
create or replace temp table publication_user_checks as
with lists as (
    select user_id, item_id, rank from read_parquet($lists)
),

purchased as (
    select distinct user_id, item_id from publication_purchased
),

flagged as (
    select
        lists.user_id,
        lists.item_id,
        lists.rank,
        items.category,
        coalesce(items.in_stock, false) as in_stock,
        coalesce(items.is_blocked, true) as is_blocked,
        purchased.user_id is not null as already_purchased
    from lists
    left join publication_items as items on lists.item_id = items.item_id
    left join purchased on lists.user_id = purchased.user_id and lists.item_id = purchased.item_id
),

per_user as (
    select
        user_id,
        bool_or(is_blocked) as is_blocked,
        bool_and(in_stock) as in_stock,
        bool_or(already_purchased) as already_purchased,
        count(*) > count(distinct item_id) as repeats_an_item,
        count(distinct item_id) as n_items
    from flagged
    group by user_id
),

-- The largest share one category takes of a user's first $head slots (items without a category
-- count in the slots but are no category of their own).
head_categories as (
    select user_id, category, count(*) as n_slots
    from flagged
    where rank <= $head
    group by user_id, category
),

head_share as (
    select
        user_id,
        max(n_slots) filter (where category is not null) / sum(n_slots) as max_category_share_head
    from head_categories
    group by user_id
)

select
    per_user.user_id,
    per_user.is_blocked,
    per_user.in_stock,
    per_user.already_purchased,
    per_user.repeats_an_item,
    per_user.n_items,
    head_share.max_category_share_head
from per_user
left join head_share on per_user.user_id = head_share.user_id
order by per_user.user_id
