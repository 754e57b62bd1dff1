from __future__ import annotations

from fastapi import APIRouter, Request

from serving.dependencies import (
    answer_responses,
    checked_id,
    checked_k,
    excluded_ids,
    filters,
    live_publication,
    openapi_parameters,
)
from serving.errors import ApiError
from serving.failures import Reason
from serving.impressions.log import SIMILAR_ITEMS
from serving.responses import JSONBytes
from serving.schemas import SimilarItems

router = APIRouter(prefix="/v1/items", tags=["items"])


# Documented by the declaration, served through Starlette's plain wrapper (serving.main._serve_lean).
@router.get(
    "/{item_id}/similar",
    response_class=JSONBytes,
    response_model=SimilarItems,
    responses=answer_responses(404, 422, 503),
    summary="Items similar to an item",
    description=(
        "The `k` items nearest to the item by the published item embeddings (cosine similarity), "
        "nearest first, without the item itself, the `exclude` ids or items blocked since the publication."
    ),
    openapi_extra=openapi_parameters("item_id", "An item of the live publication's catalog."),
)
def similar_items(request: Request) -> JSONBytes:
    # A plain `def`: the FAISS search runs in the thread pool (it releases the GIL), so a slow
    # exact search over a large catalog never stalls the event loop that serves the other endpoints.
    item_id = checked_id("item_id", request.path_params["item_id"])
    state = request.app.state
    store = state.store
    request_id = state.request_ids.for_request(request.scope["headers"])
    publication = live_publication(store)
    k = checked_k(request, publication)
    row = publication.item_rows.get(item_id)
    if row is None:
        raise ApiError(
            404,
            Reason.UNKNOWN_ITEM,
            f"item {item_id!r} is not in publication {publication.version}",
            publication.version,
        )
    blocked, excluded_rows = filters(publication, store, excluded_ids(request))
    slate = publication.similar_slate(row, k, blocked, excluded_rows)
    if state.impressions is not None:
        state.impressions.slate(request_id, SIMILAR_ITEMS, item_id, publication, slate[0], slate[1], False)
    return JSONBytes(publication.similar_body(item_id, row, request_id, slate), request_id=request_id)
