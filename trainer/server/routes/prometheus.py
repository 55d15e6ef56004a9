"""`/metrics` for Prometheus (names in README.md, "Prometheus metrics")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ..deps import StoreDep
from ..prometheus import exposition

router = APIRouter(tags=["prometheus"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(store: StoreDep, request: Request) -> PlainTextResponse:
    return PlainTextResponse(exposition(store, request.app.state.auth_failures.total),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
