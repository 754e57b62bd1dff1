from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from serving.dependencies import get_store
from serving.responses import JSONBytes
from serving.schemas import Health, NotReady, Readiness
from serving.store import PublicationStore

router = APIRouter(tags=["health"])

NOOP_BODY = b'{"ok":true}'


def fallback_facts(store: PublicationStore) -> dict:
    """Whether an older version serves because the one CURRENT names was refused (both health answers say it)."""
    return {"serving_fallback_version": store.serving_fallback_version, "current_refused": store.current_refused}


@router.get(
    "/healthz",
    response_class=JSONBytes,
    response_model=Health,
    summary="Liveness",
    description=(
        "The process is up (always 200). Names the live publication, if any, why the last one was "
        "refused, and whether an older version serves because the one `CURRENT` names was refused."
    ),
)
async def healthz(store: Annotated[PublicationStore, Depends(get_store)]) -> JSONBytes:
    live = store.current
    return JSONBytes(
        {
            "status": "ok",
            "version": live.version if live else None,
            "last_error": store.last_error,
            **fallback_facts(store),
        }
    )


@router.get(
    "/readyz",
    response_class=JSONBytes,
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "No publication is loaded yet."}},
    summary="Readiness",
    description=(
        "200 once a publication is loaded, with its size and how it is served; 503 until then. "
        "Load balancers should send traffic only to ready instances."
    ),
)
async def readyz(store: Annotated[PublicationStore, Depends(get_store)]) -> JSONBytes:
    live = store.current
    if live is None:
        return JSONBytes({"ready": False, "version": None, **fallback_facts(store)}, status_code=503)
    return JSONBytes(
        {
            "ready": True,
            "version": live.version,
            **fallback_facts(store),
            "users": live.n_users,
            "items": len(live.item_ids),
            "top_n": live.top_n,
            "item_index": live.index_spec.get("type"),
            "list_bytes_per_user": round(live.bytes_per_user, 1),
            "fast_path": live.fast_answer is not None,
            "load_seconds": round(live.load_seconds, 3),
        }
    )


@router.get("/v1/noop", include_in_schema=False)
async def noop(request: Request) -> Response:
    """Does nothing through the same stack (routing, middleware, metrics): the throughput ceiling in benchmarks."""
    return Response(NOOP_BODY, media_type="application/json")


@router.get("/experimentz", include_in_schema=False)
async def experimentz(request: Request) -> JSONBytes:
    """Running experiments as this server routes them: shares now, a canary's rollback, each variant's
    publication and the memory it holds, and any experiment (or state file) it cannot route and why."""
    return JSONBytes(request.app.state.router.status())
