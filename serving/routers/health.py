from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serving.dependencies import get_store
from serving.publication import PublicationStore

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(store: Annotated[PublicationStore, Depends(get_store)]) -> dict:
    """The process is up. Says which version is live, if any."""
    live = store.current
    return {"status": "ok", "version": live.version if live else None, "last_error": store.last_error}


@router.get("/readyz")
def readyz(store: Annotated[PublicationStore, Depends(get_store)]) -> JSONResponse:
    """Ready only once a publication is loaded: load balancers should wait for this."""
    live = store.current
    if live is None:
        return JSONResponse({"ready": False, "version": None}, status_code=503)
    return JSONResponse({"ready": True, "version": live.version})
