"""Issue 26, row 12: a run name reused after its run dir was deleted merged the new run's
metrics and events into the old run's row. A run dir now carries an id (`.run-id`, kept in
the run's row as config.run_uid): a name whose row belongs to another run dir, or to one
deleted and made again, is refused with one line and the old row is left as it was; the
same run dir (a crash before any checkpoint, or the dir moved) still continues its row.
Real `trainer train` processes on the demo shards."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_helpers import run_train  # noqa: E402

from common import exitcodes  # noqa: E402
from trainer.runstore import RunStore  # noqa: E402
from trainer.runstore.runlock import RUN_ID_NAME  # noqa: E402

FLAGS = ["--val-every", "0", "--no-tencrop", "--log-every", "1"]


def _rows(db: Path, name: str) -> tuple[dict, list, list]:
    store = RunStore(db)
    try:
        run = store.get_run_by_name(name)
        return run, store.metric_series(run["id"], "train_loss"), store.events(run["id"])
    finally:
        store.close()


@pytest.mark.slow
def test_a_reused_name_is_refused_never_merged(demo_shards, tmp_path):
    runs = tmp_path / "runs"
    db = runs / "runs.db"
    first = run_train(demo_shards, runs / "demo", *FLAGS, "--max-steps", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    before = _rows(db, "demo")
    assert before[0]["step"] == 3 and len(before[1]) == 3

    # The run dir deleted and the same command run again.
    shutil.rmtree(runs / "demo")
    again = run_train(demo_shards, runs / "demo", *FLAGS, "--max-steps", "2")
    assert again.returncode == exitcodes.USAGE, again.stderr[-2000:]
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "'demo'" in lines[0] and "--name" in lines[0], again.stderr
    # Another run dir under the same name.
    other = run_train(demo_shards, runs / "other", *FLAGS, "--max-steps", "2", "--name", "demo", "--runs-db", str(db))
    assert other.returncode == exitcodes.USAGE, other.stderr[-2000:]
    assert len(other.stderr.strip().splitlines()) == 1 and f"--run-dir {runs / 'demo'}" in other.stderr
    assert _rows(db, "demo") == before  # the old run's row, metrics and events untouched

    # A new name for the new run dir is a new run.
    renamed = run_train(demo_shards, runs / "demo", *FLAGS, "--max-steps", "2", "--name", "demo-2")
    assert renamed.returncode == 0, renamed.stderr[-2000:]
    assert _rows(db, "demo-2")[0]["id"] != before[0]["id"]


@pytest.mark.slow
def test_the_same_run_dir_still_continues_its_row(demo_shards, tmp_path):
    runs = tmp_path / "runs"
    db = runs / "runs.db"
    first = run_train(demo_shards, runs / "demo", *FLAGS, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = _rows(db, "demo")[0]["id"]
    assert (runs / "demo" / RUN_ID_NAME).is_file()
    # Moved: the id goes with it, and the row follows.
    (runs / "demo").rename(runs / "moved")
    moved = run_train(demo_shards, runs / "moved", *FLAGS, "--max-steps", "3", "--name", "demo", "--runs-db", str(db))
    assert moved.returncode == 0, moved.stderr[-2000:]
    run = _rows(db, "demo")[0]
    assert run["id"] == run_id and run["step"] == 3
    # Killed before its first checkpoint: no checkpoint, the same run dir, the same row.
    shutil.rmtree(runs / "moved" / "checkpoints")
    fresh = run_train(demo_shards, runs / "moved", *FLAGS, "--max-steps", "1", "--name", "demo", "--runs-db", str(db))
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert _rows(db, "demo")[0]["id"] == run_id
