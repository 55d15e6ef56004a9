"""Dependencies of the routes: the run store, the run named in the path, the operator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from trainer.runstore.runlock import observed_status
from trainer.runstore import RunStore

from .auth import bearer_matches
from .seriescache import SeriesCache

# Largest id SQLite stores in an INTEGER; longer digit strings are names, not ids.
_MAX_ID_DIGITS = 18


def get_store(request: Request) -> RunStore:
    return request.app.state.store


StoreDep = Annotated[RunStore, Depends(get_store)]


def get_series_cache(request: Request) -> SeriesCache:
    return request.app.state.series_cache


SeriesCacheDep = Annotated[SeriesCache, Depends(get_series_cache)]


def shown(run: dict | None) -> dict | None:
    """The run as readers see it: "interrupted" where its row says running but its trainer
    is gone (trainer/runstore/runlock.py)."""
    if run is not None:
        run["status"] = observed_status(run)
    return run


def find_run(store: RunStore, run_id: str) -> dict | None:
    """`current`, a numeric id, or a run name; None when there is no such run."""
    if run_id == "current":
        return shown(store.current_run())
    if run_id.isascii() and run_id.isdigit() and len(run_id) <= _MAX_ID_DIGITS:
        run = store.get_run(int(run_id))
        if run is not None:
            return shown(run)
    return shown(store.get_run_by_name(run_id))


def get_run(store: StoreDep, run_id: str) -> dict:
    run = find_run(store, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r}")
    return run


RunDep = Annotated[dict, Depends(get_run)]


def client_name(request: Request) -> str:
    host = request.client.host if request.client else "unknown"
    return f"operator@{host}"


def require_operator(request: Request, store: StoreDep, run_id: str) -> str:
    """The caller's name if it sent the operator token; else 401. The refusal is counted for
    /metrics and goes into the run's events (when the run exists), at most one row a second
    per client with the number of attempts it stands for (`attempts`)."""
    who = client_name(request)
    if not bearer_matches(request.headers.get("authorization"), request.app.state.token):
        reason = "missing bearer token" if "authorization" not in request.headers else "invalid bearer token"
        attempts = request.app.state.auth_failures.refused(who)
        run = find_run(store, run_id) if attempts else None
        if run is not None:
            store.record_refused_request(run["id"], reason, {"who": who, "path": request.url.path, "status": 401,
                                                             "attempts": attempts})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"})
    # Lets the validation-error handler record a refused body (e.g. factor out of range).
    request.state.operator_run = run_id
    return who


OperatorDep = Annotated[str, Depends(require_operator)]
