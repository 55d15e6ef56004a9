"""What the page and the REST API say about a run, computed from the run store's rows."""

from __future__ import annotations

import math
import time
from pathlib import Path

from trainer import runstore
from trainer.runstore import RunProgress, RunStore

from .schemas import RunBrief, RunDetail

FILTERS_PNG = "filters.png"


def filters_path(run: dict) -> Path | None:
    """The conv1 kernels picture the trainer writes into the run directory, if present."""
    run_dir = run["config"].get("run_dir")
    if not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir) / FILTERS_PNG
    return path if path.is_file() else None


def _num(value) -> float | None:
    """JSON has no NaN: a non-finite or non-numeric progress field becomes null."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def json_safe(value):
    """A copy with NaN/inf as null: they are not JSON, and the trainer may write them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _int(value) -> int | None:
    v = _num(value)
    return None if v is None else int(v)


def _compiling_s(run: dict, progress: RunProgress) -> float | None:
    """Seconds a running trainer's first step has waited for torch.compile, counted to now."""
    since = _num(progress.compiling_since)
    if since is None or run["status"] != "running":
        return None
    return max(0.0, time.time() - since)


def run_brief(run: dict) -> RunBrief:
    return RunBrief(
        id=run["id"], name=run["name"], status=run["status"], epoch=run["epoch"], step=run["step"],
        lr=run["lr"], updated_at=run["updated_at"], demo=bool(RunProgress.from_json(run["progress"]).demo),
        parent_id=run.get("parent_id"), forked_at_step=run.get("forked_at_step"))


def run_detail(store: RunStore, run: dict) -> RunDetail:
    rid, progress = run["id"], RunProgress.from_json(run["progress"])

    def last(name: str) -> float | None:
        row = store.last_metric(rid, name)
        return None if row is None else row["value"]

    filters = filters_path(run)
    stamp = int(filters.stat().st_mtime) if filters else 0
    return RunDetail(
        **run_brief(run).model_dump(),
        created_at=run["created_at"], finished_at=run["finished_at"],
        epochs=_int(run["config"].get("epochs") if progress.epochs is None else progress.epochs),
        steps_per_epoch=_int(progress.steps_per_epoch),
        best_val_top1_error=store.best_metric(rid, runstore.VAL_TOP1),
        best_val_top5_error=store.best_metric(rid, runstore.VAL_TOP5),
        last_val_top1_error=last(runstore.VAL_TOP1),
        last_val_top5_error=last(runstore.VAL_TOP5),
        last_train_loss=last(runstore.LOSS),
        images_per_sec=_num(progress.images_per_sec),
        data_wait_frac=_num(progress.data_wait_frac),
        eta_s=_num(progress.eta_s),
        images_seen=_int(progress.images_seen),
        compiling_s=_compiling_s(run, progress),
        compile_s=_num(progress.compile_s),
        pending_commands=store.count_commands(rid, "pending"),
        # ?v= changes with each new picture, so a browser never shows a stale cached one.
        filters_url=f"/api/runs/{rid}/filters.png?v={stamp}" if filters else None,
        config=json_safe(run["config"]), progress=json_safe(run["progress"]))
