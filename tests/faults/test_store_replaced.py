"""Issue 26, row 2: `runs.db` (and -wal, -shm) deleted while a trainer ran. Nothing was said;
the trainer kept writing into the deleted inode; a thread recreated a 0-byte `runs.db`
(mode 0644); a new server showed no runs; the old server served the deleted data with
/healthz ok. Now: every write batch and /healthz compare the path's (device, inode) with
the file opened; the trainer says so in one line, makes nothing, keeps its rows in memory
and writes them into a store made there on purpose; /healthz is 503 naming the problem;
every file the store makes is 0600. Real SQLite, a real uvicorn, a real `trainer train`."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from server_helpers import auth, make_run, serving  # noqa: E402
from trainer_helpers import kill9, start_train, wait_for  # noqa: E402

from trainer import runstore  # noqa: E402
from trainer.runstore import RunStore, RunStoreGone  # noqa: E402

FILES = ("runs.db", "runs.db-wal", "runs.db-shm")


def _delete(db: Path) -> None:
    for name in FILES:
        (db.parent / name).unlink(missing_ok=True)


def _in_thread(fn):
    """fn() on a new thread, as the heartbeat or a server worker runs: its first connection."""
    out = {}

    def call():
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=call)
    t.start()
    t.join(30)
    return out


def test_every_file_the_store_makes_is_0600(tmp_path):
    old = os.umask(0o022)
    try:
        store = RunStore(tmp_path / "runs.db")
        make_run(store, steps=50)
        _in_thread(lambda: store.heartbeat(1))
        present = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in FILES
                   if (tmp_path / name).exists()}
        store.close()
    finally:
        os.umask(old)
    assert set(present) == set(FILES) and set(present.values()) == {0o600}, present


def test_a_removed_store_is_noticed_and_never_made_again(tmp_path):
    db = tmp_path / "runs.db"
    store = RunStore(db)
    rid = make_run(store, steps=10)
    _delete(db)
    store.log_metrics(rid, 11, 0.11, {runstore.LOSS: 1.0})
    with pytest.raises(RunStoreGone, match="was removed"):
        store.flush()
    assert len(store._metric_buf) == 1  # kept for a store made on purpose
    with pytest.raises(RunStoreGone):
        store.update_progress(rid, epoch=0.2, step=20, lr=0.01)
    heartbeat = _in_thread(lambda: store.heartbeat(rid))
    reader = _in_thread(lambda: store.list_runs())
    assert isinstance(heartbeat.get("error"), RunStoreGone)
    assert "error" in reader  # a fresh connection does not make a new empty file
    assert not any((tmp_path / name).exists() for name in FILES), sorted(os.listdir(tmp_path))

    # A store made there on purpose is taken, and the kept rows go into it.
    made = RunStore(db)
    assert store.reopen()
    new_id, _ = store.start_run("run-a", {}, lr=0.01)
    store.rebind_buffered(rid, new_id)
    store.flush()
    assert [r["step"] for r in made.metric_series(new_id, runstore.LOSS)] == [11]
    made.close()
    store.close()


def test_a_replaced_store_is_noticed(tmp_path):
    db = tmp_path / "runs.db"
    store = RunStore(db)
    rid = make_run(store, steps=10)
    other = RunStore(tmp_path / "other.db")
    other.close()
    os.replace(tmp_path / "other.db", db)
    with pytest.raises(RunStoreGone, match="replaced"):
        store.set_status(rid, "finished")
    with pytest.raises(RunStoreGone):
        store.submit_lr_divide(rid, 10.0)


def test_healthz_is_503_naming_a_removed_store(tmp_path):
    with serving(tmp_path / "runs.db") as live, live.client() as c:
        rid = make_run(live.store, steps=10)
        assert c.get("/healthz").status_code == 200
        _delete(live.db)
        r = c.get("/healthz")
        assert r.status_code == 503 and "was removed" in r.json()["detail"], r.text
        assert "restart `trainer serve`" in r.json()["detail"]
        d = c.post(f"/api/runs/{rid}/lr/divide", json={"factor": 10, "reason": "x"}, headers=auth())
        assert d.status_code == 503 and "was removed" in d.json()["detail"], d.text
        assert not live.db.exists()


@pytest.mark.slow
def test_the_trainer_says_so_once_and_writes_into_a_store_made_on_purpose(demo_shards, tmp_path):
    db, log = tmp_path / "store" / "runs.db", tmp_path / "train.log"
    proc = start_train(demo_shards, tmp_path / "run", "--runs-db", str(db), "--max-steps", "100000",
                       "--val-every", "0", "--no-tencrop", "--log-every", "1", "--step-delay", "0.1",
                       "--checkpoint-minutes", "60", log=log)
    try:
        probe = RunStore(db)
        wait_for(lambda: (r := probe.get_run_by_name("run")) and r["step"] >= 3, what="first steps", proc=proc)
        probe.close()
        _delete(db)
        wait_for(lambda: "was removed" in log.read_text(), what="the warning", proc=proc)
        gone_at = time.monotonic()
        time.sleep(3)  # heartbeats, progress and metric flushes meet the missing file
        assert not any((db.parent / name).exists() for name in FILES), sorted(os.listdir(db.parent))
        made = RunStore(db)  # on purpose, as `trainer serve --runs-db` makes it
        wait_for(lambda: "written there from now on" in log.read_text(), what="the rejoin", proc=proc)
        rejoined = time.monotonic() - gone_at
        run = wait_for(lambda: (r := made.get_run_by_name("run")) and r["step"] > 0 and r, what="the row",
                       proc=proc)
        steps = wait_for(lambda: [p["step"] for p in made.metric_series(run["id"], runstore.LOSS)],
                         what="metrics", proc=proc)
        # Rows of the steps taken while no store was there came from memory.
        assert min(steps) <= run["step"] - int(rejoined / 0.2), (steps[:5], run["step"], rejoined)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        assert made.get_run(run["id"])["status"] == "stopped"
        made.close()
    finally:
        if proc.poll() is None:
            kill9(proc)
    text = log.read_text()
    assert text.count("was removed") == 1 and "Traceback" not in text, text[-3000:]
    assert f"trainer serve --runs-db {db}" in text


def _guarded_run(tmp_path, rejoin, monkeypatch):
    from trainer.run import storeguard

    monkeypatch.setattr(storeguard, "REJOIN_EVERY_S", 0.0)  # each poll looks for a store made again

    db = tmp_path / "runs.db"
    raw = RunStore(db)
    rid = make_run(raw, "mine", steps=4)
    lines: list[str] = []
    guard = storeguard.GuardedStore(raw, warn=lambda line, flush=False: lines.append(line), run_id=rid, rejoin=rejoin)
    _delete(db)
    guard.log_metrics(rid, 5, 0.05, {runstore.LOSS: 5.0})
    guard.flush()
    guard.log_metrics(rid, 6, 0.06, {runstore.LOSS: 6.0})
    assert guard.pending_commands(rid) == [] and not db.exists()
    return db, raw, rid, guard, lines


def test_the_guard_writes_kept_rows_into_a_store_made_on_purpose(tmp_path, monkeypatch):
    from trainer.run.commands import Control
    from trainer.run.distributed import World

    db, raw, rid, guard, lines = _guarded_run(tmp_path, lambda s: s.start_run("mine", {}, lr=0.01)[0],
                                              monkeypatch)
    # The old file's checkpoint included command 1; ids start again at 1 in a new file.
    control = Control(World(), guard, rid, checkpoint_seconds=1e9, poll_seconds=0.0, included={1})
    made = RunStore(db)
    other = make_run(made, "someone-else", steps=3)  # takes the old run's id in the new file
    assert other == rid
    guard.pending_commands(rid)  # the poll at a step boundary finds the new store
    mine = made.get_run_by_name("mine")["id"]
    guard.flush()
    assert [r["step"] for r in made.metric_series(mine, runstore.LOSS)] == [5, 6]
    assert [r["step"] for r in made.metric_series(other, runstore.LOSS)] == [1, 2, 3]
    first, _ = made.submit_lr_divide(mine, 10.0, reason="after the store was made again")
    assert first.id == 1
    assert control.exchange(step=7, lr=0.01).new_lr == pytest.approx(0.001)
    assert len(lines) == 2 and "was removed" in lines[0] and f"run #{mine}" in lines[1], lines
    made.close()


def test_the_guard_never_writes_into_another_run_of_its_name(tmp_path, monkeypatch):
    db, raw, rid, guard, lines = _guarded_run(tmp_path, lambda s: None, monkeypatch)
    made = RunStore(db)
    stranger = make_run(made, "mine", steps=2)  # the same name, another run dir's run
    guard.pending_commands(rid)
    before = made.metric_series(stranger, runstore.LOSS)
    guard.log_metrics(rid, 7, 0.07, {runstore.LOSS: 7.0})
    guard.update_progress(rid, epoch=9.0, step=900, lr=0.5)
    guard.flush()
    assert made.metric_series(stranger, runstore.LOSS) == before and made.get_run(stranger)["step"] == 2
    assert len(lines) == 2 and "holds another run of this name" in lines[1], lines
    made.close()
