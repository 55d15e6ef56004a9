"""Request and response bodies of the REST API (they make the OpenAPI document at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RunBrief(BaseModel):
    id: int
    name: str
    status: str
    epoch: float
    step: int
    lr: float | None
    updated_at: float
    demo: bool = Field(description="the run uses a demo configuration, not the paper's")


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


class Command(BaseModel):
    id: int
    run_id: int
    kind: str
    factor: float
    reason: str
    who: str
    idempotency_key: str | None
    requested_at: float
    state: str = Field(description="pending, applied (at applied_step) or rejected (detail says why)")
    applied_step: int | None
    applied_at: float | None
    detail: str


class DivideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(10.0, gt=1, le=1000, allow_inf_nan=False, description="new LR = LR / factor")
    reason: str = Field(min_length=1, max_length=500, description="why; kept with the command and its events")


class Problem(BaseModel):
    detail: str | list | dict
