"""Request and response bodies of the REST API (they make the OpenAPI document at /docs)."""

from __future__ import annotations

import dataclasses
import typing

from pydantic import BaseModel, ConfigDict, Field, create_model

from trainer import runstore


class RunBrief(BaseModel):
    id: int
    name: str
    status: str
    epoch: float
    step: int
    lr: float | None
    updated_at: float
    demo: bool = Field(description="the run uses a demo configuration, not the paper's")
    parent_id: int | None = Field(None, description="the run this one was forked from (trainer train --fork-from)")
    forked_at_step: int | None = Field(None, description="the parent's step the fork started from")


class Advice(BaseModel):
    """The plateau rule over a run's validations (trainer/runstore/advice.py)."""
    run_id: int
    policy: str = Field(description="the run's LR policy: manual, plateau or step")
    patience: int = Field(description="flat validations that make a plateau (the run's --patience, or the default)")
    threshold: float = Field(description="an improvement beats the best top-1 error by more than this")
    flat_epochs: int = Field(description="validations since the best (or the last LR division) without improvement")
    best: float | None = Field(description="the best top-1 error, the reference an improvement must beat")
    best_epoch: float | None
    since: float | None = Field(description="the epoch of that best")
    last_division_step: int | None
    due: bool = Field(description="a running run on a plateau: dividing the LR is advised")
    suggestion: str | None
    policy_acts: str | None = Field(description="when the run's own policy divides the LR, if it will")


class RunSummary(RunBrief):
    created_at: float
    finished_at: float | None
    epochs: int | None = Field(description="epochs the run is configured for")
    steps_per_epoch: int | None
    best_val_top1_error: float | None
    best_val_top5_error: float | None
    last_val_top1_error: float | None
    last_val_top5_error: float | None
    last_train_loss: float | None
    images_per_sec: float | None
    data_wait_frac: float | None
    eta_s: float | None = Field(description="seconds until the configured last epoch ends")
    images_seen: int | None
    compiling_s: float | None = Field(None, description="seconds the first step has waited for torch.compile, "
                                                         "while it waits (null otherwise)")
    compile_s: float | None = Field(None, description="how long the first step waited for torch.compile")
    pending_commands: int
    filters_url: str | None = Field(description="the conv1 kernels of the latest checkpoint (PNG)")


class RunDetail(RunSummary):
    config: dict
    progress: dict


class Series(BaseModel):
    """One metric, column-wise (what a chart wants); `values` holds null for NaN/inf."""
    run_id: int
    name: str
    since_step: int
    steps: list[int]
    epochs: list[float]
    walls: list[float]
    values: list[float | None]


class Event(BaseModel):
    id: int
    run_id: int
    step: int | None
    wall: float
    kind: str
    payload: dict


def _from_record(record: type, descriptions: dict[str, str]) -> type[BaseModel]:
    """A response model with the fields of the store's dataclass `record`: one definition of
    the record, its REST schema derived (a field added there appears here)."""
    hints = typing.get_type_hints(record)
    return create_model(record.__name__, **{
        f.name: (hints[f.name], Field(description=descriptions.get(f.name))) for f in dataclasses.fields(record)})


Command = _from_record(runstore.Command, {"state": "pending, applied (at applied_step) or rejected (detail says why)"})


class DivideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(10.0, gt=1, le=1000, allow_inf_nan=False, description="new LR = LR / factor")
    reason: str = Field(min_length=1, max_length=500, description="why; kept with the command and its events")


class Problem(BaseModel):
    detail: str | list | dict
