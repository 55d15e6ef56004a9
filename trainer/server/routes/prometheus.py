"""`/metrics` for Prometheus (names in README.md, "Prometheus metrics")."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..deps import StoreDep
from ..prometheus import exposition

router = APIRouter(tags=["prometheus"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(store: StoreDep) -> PlainTextResponse:
    return PlainTextResponse(exposition(store), media_type="text/plain; version=0.0.4; charset=utf-8")
