"""The run store's schema, names and transaction helpers (see `trainer.runstore`)."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

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

RUN_STATUSES = ("running", "finished", "stopped", "failed")
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
    progress TEXT NOT NULL DEFAULT '{}'
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


def _schema_statements() -> list[str]:
    return [stmt for stmt in _SCHEMA.split(";") if stmt.strip()]


class RunStoreError(RuntimeError):
    pass


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT: writers queue on the busy timeout instead of failing."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


class _snapshot(_transaction):
    """BEGIN (deferred) ... COMMIT: in WAL mode the reads inside see one consistent state
    and never block the writer."""

    def __enter__(self):
        self.conn.execute("BEGIN")
        return self.conn
