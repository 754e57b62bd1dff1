from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from serving.dependencies import get_store
from serving.responses import JSONBytes
from serving.store import PublicationStore

router = APIRouter(tags=["health"])

NOOP_BODY = b'{"ok":true}'


@router.get("/healthz")
async def healthz(store: Annotated[PublicationStore, Depends(get_store)]) -> JSONBytes:
    """The process is up. Says which version is live, if any, and why the last candidate was refused."""
    live = store.current
    return JSONBytes({"status": "ok", "version": live.version if live else None, "last_error": store.last_error})


@router.get("/readyz")
async def readyz(store: Annotated[PublicationStore, Depends(get_store)]) -> JSONBytes:
    """Ready only once a publication is loaded: load balancers should wait for this."""
    live = store.current
    if live is None:
        return JSONBytes({"ready": False, "version": None}, status_code=503)
    return JSONBytes(
        {
            "ready": True,
            "version": live.version,
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
