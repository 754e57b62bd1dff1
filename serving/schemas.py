"""Response bodies of the API, as the OpenAPI document describes them.

The hot endpoints build their bodies as bytes from the publication's arrays (serving.responses)
and are not validated against these models per request; the tests compare real answers with the
schemas these models generate, so the document and the bytes cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.impressions.request_ids import REQUEST_ID_PATTERN

REASON_DESCRIPTION = (
    "Why the item is in the list: `model` (ranked by the published model), `popular` (from the "
    "popularity list: the fallback for unknown users, the popularity side of a cold user's blend, or "
    "a popularity model), `similar_to:<item_id>` (close, by the item embeddings, to the named item: "
    "one from the user's own history in recommendations, the requested item in similar items), `explore` "
    "(a random item swapped in by exploration, RECFORGE_EXPLORATION_EPSILON; it keeps the replaced item's score)."
)
SCORE_DESCRIPTION = (
    "The ranking score; higher ranks first, and only the order within one answer is meaningful. "
    "For `model` items it is the published model's score (its scale depends on the algorithm); for "
    "`popular` items the item's popularity score; in similar items the cosine similarity of the "
    "item embeddings (-1..1)."
)
VERSION_DESCRIPTION = "The publication that answered (a UTC timestamp and the registry model version)."
REQUEST_ID_DESCRIPTION = (
    "This answer's id, also sent as the `X-Request-ID` header: the client's own `X-Request-ID` when it "
    "sent a valid one, else a new id unique across server processes and restarts. Report outcomes "
    "(clicks, add-to-carts, purchases) of the shown items with it in the event's `context.request_id`."
)


class Item(BaseModel):
    item_id: str = Field(description="The recommended item.")
    score: float = Field(description=SCORE_DESCRIPTION)
    reason: str = Field(description=REASON_DESCRIPTION, examples=["model", "popular", "similar_to:i000042"])


class UserRecommendations(BaseModel):
    user_id: str = Field(description="The user the list is for, as requested.")
    request_id: str = Field(description=REQUEST_ID_DESCRIPTION, pattern=REQUEST_ID_PATTERN)
    version: str = Field(description=VERSION_DESCRIPTION)
    experiment: str | None = Field(
        description="The running experiment that chose which publication answers this user; null outside experiments."
    )
    variant: str | None = Field(
        description="The user's variant in that experiment (sticky: a salted hash of the user id), `holdback` for "
        "the users who get the popularity list; null outside experiments."
    )
    fallback: bool = Field(
        description="True when the answer is the popularity fallback list: the user is unknown to the publication, "
        "or is in an experiment's holdback."
    )
    items: list[Item] = Field(description="At most `k` items, best first.")


class SimilarItems(BaseModel):
    item_id: str = Field(description="The item the neighbours are for, as requested (never in `items`).")
    request_id: str = Field(description=REQUEST_ID_DESCRIPTION, pattern=REQUEST_ID_PATTERN)
    version: str = Field(description=VERSION_DESCRIPTION)
    items: list[Item] = Field(description="At most `k` nearest items, nearest first.")


class EventError(BaseModel):
    index: int = Field(description="The refused event's position in the request, from 0 (NDJSON: blank lines skipped).")
    reason: str = Field(description="The event contract's reason code.", examples=["missing_user_id"])
    detail: str = Field(description="What the reason code means.")
    line: int | None = Field(default=None, description="NDJSON only: the event's line in the body, from 1.")


class CollectedEvents(BaseModel):
    accepted: int = Field(description="Events stored durably by this request.")
    rejected: int = Field(description="Events refused (and not stored).")
    errors: list[EventError] = Field(description="One entry per refused event, in request order.")


class ErrorDetail(BaseModel):
    detail: str = Field(description="What was wrong with the request, or why it cannot be answered now.")


class Health(BaseModel):
    status: str = Field(description="Always `ok` while the process answers.")
    version: str | None = Field(description="The live publication, or null before the first one is loaded.")
    last_error: str | None = Field(
        description="Why the last publication was refused (paths relative to the published directory), or null."
    )
    serving_fallback_version: bool = Field(
        description="True when the live version is an older one because the version CURRENT names was refused."
    )
    current_refused: str | None = Field(description="The version CURRENT names, when it was refused; else null.")


class NotReady(BaseModel):
    ready: bool = Field(description="False: no publication is loaded yet (status 503).")
    version: None = Field(description="Null: nothing is live.")
    serving_fallback_version: bool = Field(description="False while nothing is live.")
    current_refused: str | None = Field(
        description="The version CURRENT names, when it was refused and no older complete version verifies."
    )


class Readiness(BaseModel):
    ready: bool = Field(description="True: a publication is loaded and answers.")
    version: str = Field(description="The live publication.")
    serving_fallback_version: bool = Field(
        description="True when the live version is an older one because the version CURRENT names was refused."
    )
    current_refused: str | None = Field(description="The version CURRENT names, when it was refused; else null.")
    users: int = Field(description="Users with a stored list.")
    items: int = Field(description="Items in the publication's catalog.")
    top_n: int = Field(description="Items stored per user: the largest `k` answered.")
    item_index: str = Field(description="The item index type (`flat` or `hnsw`).")
    list_bytes_per_user: float = Field(description="Memory held per user for the lists.")
    fast_path: bool = Field(description="Whether the C answer path is in use.")
    load_seconds: float = Field(description="How long loading the live publication took.")
