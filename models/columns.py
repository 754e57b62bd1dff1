"""Column names, in one place, matching the dbt marts; pipelines and metrics import them."""


class Columns:
    User = "user_id"
    Item = "item_id"
    Weight = "weight"
    Split = "split"
    Rank = "rank"
    Score = "score"
    Reason = "reason"
    # time and item attributes (marts.interactions, marts.item_features)
    LastTs = "last_ts"
    Category = "category"
    Price = "price"
    CreatedAt = "created_at"
