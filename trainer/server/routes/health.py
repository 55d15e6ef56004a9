"""Liveness and the few settings the page needs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..deps import StoreDep

router = APIRouter(tags=["server"])


@router.get("/healthz", responses={503: {"description": "the run store is damaged or unavailable"}})
def healthz(request: Request, store: StoreDep):
    """200 when the run store answers a read of each table; 503 with the reason otherwise."""
    problem = request.app.state.health.problem(store)
    if problem:
        return JSONResponse({"status": "unhealthy", "detail": problem}, status_code=503)
    return {"status": "ok"}


@router.get("/api/server")
def server_info(request: Request) -> dict:
    settings = request.app.state.settings
    return {"refresh_s": settings.refresh_s, "min_lr": settings.min_lr}
