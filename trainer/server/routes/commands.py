"""Operator commands: divide the learning rate, and follow the command to its outcome.

`POST /api/runs/{run_id}/lr/divide` records a pending command (202); the trainer applies
it at its next poll and records the step. The run store checks, in one transaction, the
idempotency key, the run's status and the LR after every pending division.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from trainer.runstore.runlock import interrupted_reason
from trainer.runstore import INTERRUPTED

from ..deps import OperatorDep, RunDep, StoreDep
from ..schemas import Command, DivideRequest, Problem

router = APIRouter(prefix="/api", tags=["commands"])

DIVIDE_RESPONSES = {
    401: {"model": Problem, "description": "no or wrong bearer token"},
    404: {"model": Problem, "description": "no such run"},
    409: {"model": Problem, "description": "refused: run not running (or interrupted: its trainer is gone), "
                                           "or LR would fall under --min-lr"},
    413: {"model": Problem, "description": "request body too large"},
}


@router.post("/runs/{run_id}/lr/divide", status_code=202, responses=DIVIDE_RESPONSES)
def divide_lr(
    who: OperatorDep, run: RunDep, store: StoreDep, body: DivideRequest, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Command:
    """Ask the trainer to divide the LR by `factor` (default 10). A retried request with the
    same `Idempotency-Key` returns the first command instead of making a second one."""
    try:
        cmd, created = store.submit_lr_divide(
            run["id"], body.factor, reason=body.reason, who=who,
            idempotency_key=idempotency_key, min_lr=request.app.state.settings.min_lr,
            refuse=interrupted_reason(run) if run["status"] == INTERRUPTED else "")
    except KeyError:
        raise HTTPException(404, f"no run {run['id']}") from None
    if not created and (cmd.factor != body.factor or cmd.reason != body.reason):
        detail = f"Idempotency-Key already used by command {cmd.id} with a different body"
        store.record_refused_request(run["id"], detail, {"who": who, "status": 409})
        raise HTTPException(409, detail)
    replayed = {} if created else {"Idempotent-Replayed": "true"}
    response.headers.update(replayed)
    if cmd.state == "rejected":
        return JSONResponse({"detail": cmd.detail, "command": cmd.to_dict()}, status_code=409, headers=replayed)
    return Command(**cmd.to_dict())


@router.get("/runs/{run_id}/commands", responses={404: {"model": Problem}})
def list_commands(store: StoreDep, run: RunDep) -> list[Command]:
    return [Command(**c.to_dict()) for c in store.commands(run["id"])]


@router.get("/commands/{command_id}", responses={404: {"model": Problem}})
def get_command(store: StoreDep, command_id: int) -> Command:
    """A command's state: pending, applied at `applied_step`, or rejected with `detail`."""
    cmd = store.get_command(command_id) if 0 < command_id < 2**62 else None
    if cmd is None:
        raise HTTPException(404, f"no command {command_id}")
    return Command(**cmd.to_dict())
