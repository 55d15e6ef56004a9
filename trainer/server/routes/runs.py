"""Read-only views of runs: summaries, metric series, events, the conv1 kernels picture."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.responses import FileResponse

from ..deps import RunDep, SeriesCacheDep, StoreDep, shown
from ..advice import advice
from ..schemas import Advice, Event, RunBrief, RunDetail, Series
from ..summary import filters_path, json_safe, run_brief, run_detail

router = APIRouter(prefix="/api/runs", tags=["runs"])

NOT_FOUND = {404: {"description": "no such run"}}
MAX_STEP = 2**62


@router.get("")
def list_runs(store: StoreDep) -> list[RunBrief]:
    """Every run, newest first."""
    return [run_brief(shown(r)) for r in store.list_runs()]


@router.get("/{run_id}", responses=NOT_FOUND)
def get_run(store: StoreDep, run: RunDep) -> RunDetail:
    """One run by id, name, or `current` (the most recently updated running run)."""
    return run_detail(store, run)


@router.get("/{run_id}/advice", responses=NOT_FOUND)
def run_advice(store: StoreDep, run: RunDep) -> Advice:
    """Whether the run's top-1 error has stopped improving (the plateau rule of
    `--lr-policy plateau`, with the run's parameters or their defaults): the page's banner."""
    return advice(store, run)


@router.get("/{run_id}/metrics", responses=NOT_FOUND)
def metric_names(store: StoreDep, run: RunDep) -> list[str]:
    return store.metric_names(run["id"])


@router.get("/{run_id}/metrics/{name}", response_model=Series, responses=NOT_FOUND)
def metric_series(
    store: StoreDep, cache: SeriesCacheDep, run: RunDep, name: Annotated[str, Path(max_length=64)],
    since_step: Annotated[int, Query(ge=0, le=MAX_STEP)] = 0,
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """One metric from `since_step` on, downsampled on the server to at most `max_points`."""
    # The series' last row versions the cached answer: a new or replaced row changes it.
    last = store.last_metric(run["id"], name)
    key, version = (run["id"], name, since_step, max_points), (last and last["step"], last and last["wall"])
    body = cache.get(key, version)
    if body is None:
        rows = store.metric_series(run["id"], name, since_step=since_step, max_points=max_points)
        body = Series(run_id=run["id"], name=name, since_step=since_step,
                      steps=[r["step"] for r in rows], epochs=[r["epoch"] for r in rows],
                      walls=[r["wall"] for r in rows], values=[r["value"] for r in rows]).model_dump_json().encode()
        cache.put(key, version, body)
    return Response(body, media_type="application/json")


@router.get("/{run_id}/events", responses=NOT_FOUND)
def events(
    store: StoreDep, run: RunDep,
    since_id: Annotated[int, Query(ge=0, le=MAX_STEP)] = 0,
    kind: Annotated[list[str] | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[Event]:
    """Events after `since_id`: LR changes, checkpoints, evaluations, restarts, commands."""
    rows = store.events(run["id"], since_id=since_id, kinds=kind, limit=limit)
    return [Event(**json_safe(r)) for r in rows]


@router.get("/{run_id}/filters.png", response_class=FileResponse, responses=NOT_FOUND)
def filters_png(run: RunDep) -> FileResponse:
    """The conv1 kernels of the latest checkpoint (the paper's Figure 3), from the run directory."""
    path = filters_path(run)
    if path is None:
        raise HTTPException(404, "no conv1 kernels picture yet (written at the first checkpoint)")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
