"""The run store's schema: its tables and their migrations, the metric names, the progress
record, the statuses and the LR floor's constants (see `trainer.runstore`)."""

from __future__ import annotations

import dataclasses

SCHEMA_VERSION = 3

# The lowest LR an operator's division may reach: the server's and the trainer's default
# (`trainer serve --min-lr`, `trainer train --min-lr`).
DEFAULT_MIN_LR = 1e-7
# An LR equal to the floor up to rounding (1e-4 / 10) is at the floor, not under it.
FLOOR_TOLERANCE = 1e-9

# Metric names the trainer writes and the server and /metrics read.
LOSS = "train_loss"
LR = "lr"
VAL_TOP1 = "val_top1_error"
VAL_TOP5 = "val_top5_error"
VAL10_TOP1 = "val_tencrop_top1_error"
VAL10_TOP5 = "val_tencrop_top5_error"
IMAGES_PER_SEC = "images_per_sec"
DATA_WAIT = "data_wait_frac"
EPOCH = "epoch"
IMAGES_SEEN = "images_seen"



@dataclasses.dataclass(frozen=True)
class RunProgress:
    """The progress record: the JSON object in `runs.progress`, beside the row's epoch, step
    and LR columns. Rank 0 writes it about once a second (`trainer.run.progress.StoreReporter`);
    the REST API (`trainer.server.summary`) and /metrics (`trainer.server.prometheus`) read
    it. A field a stored row lacks (a store written before the field existed) reads as None."""

    # The run's fixed facts (trainer.run.session).
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    world_size: int | None = None
    demo: bool = False
    max_steps: int | None = None  # 0: all epochs
    # What the loop measures (trainer.run.progress.Meter): floats may be NaN or infinite.
    images_per_sec: float | None = None
    data_wait_frac: float | None = None
    eta_s: float | None = None
    images_seen: int | None = None
    # torch.compile's first step (trainer.run.compiled): the wall time it began while it
    # lasts, then how long it took.
    compiling_since: float | None = None
    compile_s: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, stored: dict) -> "RunProgress":
        """The record of a stored object, its values as stored (a reader checks their
        types); keys this code does not know are passed over."""
        return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls) if f.name in stored})


RUN_STATUSES = ("running", "finished", "stopped", "failed")
# Never stored: what a reader shows for a "running" row whose trainer is gone
# (trainer/runstore/runlock.py decides).
INTERRUPTED = "interrupted"
COMMAND_STATES = ("pending", "applied", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    epoch REAL NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    lr REAL,
    progress TEXT NOT NULL DEFAULT '{}',
    holder TEXT NOT NULL DEFAULT '{}',
    heartbeat_at REAL,
    parent_id INTEGER,
    forked_at_step INTEGER
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch REAL NOT NULL,
    wall REAL NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    step INTEGER,
    wall REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    factor REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    who TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    requested_at REAL NOT NULL,
    state TEXT NOT NULL,
    applied_step INTEGER,
    applied_at REAL,
    detail TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS commands_run_state ON commands (run_id, state, id);
"""


# Version 1 -> 2: the trainer holding a run (pid, host) and its heartbeat.
MIGRATIONS = {
    1: ["ALTER TABLE runs ADD COLUMN holder TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE runs ADD COLUMN heartbeat_at REAL"],
    # Version 2 -> 3: the run a fork was started from, and the step (trainer/runstore/lineage.py).
    2: ["ALTER TABLE runs ADD COLUMN parent_id INTEGER",
        "ALTER TABLE runs ADD COLUMN forked_at_step INTEGER"],
}


def _schema_statements() -> list[str]:
    return [stmt for stmt in _SCHEMA.split(";") if stmt.strip()]
