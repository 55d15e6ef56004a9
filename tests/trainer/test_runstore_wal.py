"""The run store's WAL goes back to a bounded size after a burst that a reader held open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trainer.runstore as runstore
from trainer.runstore import RunStore


def test_a_wal_grown_behind_a_reader_is_cut_back_once_checkpointed(tmp_path, monkeypatch):
    monkeypatch.setattr(runstore.store, "WAL_LIMIT_BYTES", 1 << 20)
    db = tmp_path / "runs.db"
    store = RunStore(db)
    run, _ = store.start_run("r", {})
    reader = sqlite3.connect(db)  # an old snapshot: no checkpoint can empty the WAL meanwhile
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runs").fetchone()
    wal = Path(f"{db}-wal")
    step = 0
    while wal.stat().st_size < 4 << 20:
        store.log_metrics(run, step, 0.0, {f"m{k}": float(k) for k in range(100)})
        store.flush()
        step += 1
    reader.rollback()
    reader.close()
    for _ in range(3):  # steady writing again: a checkpoint empties the WAL, the next write cuts it
        store.log_metrics(run, step, 0.0, {"loss": 1.0})
        store.flush()
        step += 1
    assert wal.stat().st_size <= 1 << 20
    assert store.last_metric(run, "loss")["value"] == 1.0
    store.close()
