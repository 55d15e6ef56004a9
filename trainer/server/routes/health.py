"""Liveness and the few settings the page needs."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import StoreDep

router = APIRouter(tags=["server"])


@router.get("/healthz")
def healthz(store: StoreDep) -> dict:
    """200 when the run store answers a query."""
    store.current_run()
    return {"status": "ok"}


@router.get("/api/server")
def server_info(request: Request) -> dict:
    settings = request.app.state.settings
    return {"refresh_s": settings.refresh_s, "min_lr": settings.min_lr}
