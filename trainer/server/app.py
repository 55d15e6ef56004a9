"""`create_app(settings)`: the control server's FastAPI application (run by `trainer serve`).

Thin by design: every handler reads or writes the run store (trainer/runstore/) and
nothing here imports torch. Handlers are plain `def`s, so FastAPI runs them in its thread
pool and a SQLite call never blocks the event loop.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from trainer.runstore import RunStore, RunStoreDamaged, RunStoreError

from .auth import AuthFailures, resolve_token
from .deps import find_run
from .middleware import BodySizeLimit, HeadAsGet, SecurityHeaders
from .routes import commands, health, page, prometheus, runs
from .seriescache import SeriesCache
from .settings import ServerSettings
from .storehealth import StoreHealth

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="AlexNet control server", version="1",
                  description="Progress, metrics and operator commands of AlexNet training runs.",
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.token, _ = resolve_token(settings, generate=False)
    app.state.store = RunStore(settings.runs_db)
    app.state.store.check_integrity()  # a damaged store is said at start, not as 500s later
    app.state.health = StoreHealth(settings.store_check_s)
    app.state.auth_failures = AuthFailures()
    app.state.series_cache = SeriesCache()
    for module in (health, runs, commands, prometheus, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    app.add_exception_handler(RequestValidationError, _refused_body)
    app.add_exception_handler(RunStoreError, _store_busy)
    # Added last = outermost: the size limit runs before anything reads the body.
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                         "Idempotency-Key"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.header_timeout_s)
    return app


async def _refused_body(request: Request, exc: RequestValidationError):
    """422 as FastAPI answers it; an authenticated operator's invalid command (a factor out
    of (1, 1000], no reason) also lands in the run's events with the reason."""
    run_id = getattr(request.state, "operator_run", None)
    if run_id is not None:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        await run_in_threadpool(_record_refusal, request.app.state.store, run_id,
                                f"invalid request: {reason}"[:1000], request.url.path)
    if _all_finite(exc.errors()):
        return await request_validation_exception_handler(request, exc)
    # {"factor": NaN} is valid Python JSON but not JSON: answer with the input as text.
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _record_refusal(store: RunStore, run_id: str, reason: str, path: str) -> None:
    run = find_run(store, run_id)
    if run is not None:
        store.record_refused_request(run["id"], reason, {"path": path, "status": 422})


async def _store_busy(request: Request, exc: Exception):
    log.warning("run store error on %s: %s", request.url.path, exc)
    if isinstance(exc, RunStoreDamaged):
        request.app.state.health.remember(str(exc))
        return JSONResponse({"detail": f"run store damaged: {exc}"}, status_code=503)
    return JSONResponse({"detail": f"run store unavailable: {exc}"}, status_code=503)
