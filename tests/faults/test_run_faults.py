"""Issue 13, one trainer per run and what its run store survives (rows 4, 8, 15; item 7's
store side): real `trainer train` processes on the demo shards, a real uvicorn, real SQLite
on a small tmpfs."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from server_helpers import auth, serving  # noqa: E402
from trainer_helpers import REPO, checkpoint, env, kill9, start_train, train_argv, wait_for  # noqa: E402

from trainer.run.commands import Control  # noqa: E402
from trainer.run.distributed import World  # noqa: E402
from trainer.runstore.runlock import RunLock  # noqa: E402
from trainer.runstore import RunStore  # noqa: E402

# A slow tiny run: commands are polled once a second; checkpoints every ~0.3 s.
FLAGS = ["--lr", "1e-4", "--max-steps", "100000", "--val-every", "0", "--no-tencrop", "--step-delay", "0.1",
         "--checkpoint-minutes", "0.005"]
SERVER_MIN_LR = 1e-5


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    sizes = {p.name: p.stat().st_size for p in disk.iterdir()}
    assert shutil.disk_usage(disk).free > 65536, f"the store filled the disk before the test did: {sizes}"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def _divide_every_25ms(c: httpx.Client, run: str, seconds: float) -> list[int]:
    codes, t_end = [], time.monotonic() + seconds
    while time.monotonic() < t_end:
        codes.append(c.post(f"/api/runs/{run}/lr/divide", json={"factor": 10, "reason": "race"},
                            headers=auth()).status_code)
        time.sleep(0.025)
    return codes


@pytest.mark.slow
def test_one_trainer_per_run_its_lr_floor_and_a_full_store(demo_shards, tmp_path, small_disk):
    # Room for the row-8 phase's ~100 commits, until it is filled. 8 MB was once full before
    # the test filled it, in a clean-clone CI run on a loaded machine; `_fill` now names the sizes.
    disk = small_disk(32768)
    db, run_dir = disk / "runs.db", tmp_path / "run"
    log = tmp_path / "first.log"
    second = None
    first = start_train(demo_shards, run_dir, *FLAGS, "--runs-db", str(db), log=log)
    try:
        with serving(db, min_lr=SERVER_MIN_LR) as live, live.client() as c:
            wait_for(lambda: (r := live.store.get_run_by_name("run")) and r["step"] >= 2, what="the run's row",
                     proc=first)
            # Row 4's second trainer on the same run dir starts now; it is judged below.
            second = subprocess.Popen(train_argv(demo_shards, run_dir, *FLAGS, "--runs-db", str(db)), cwd=REPO,
                                      env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

            # Row 8: divisions every 25 ms around an applied one. The server used to check runs.lr,
            # which the trainer updated up to a second after marking the command applied.
            codes = _divide_every_25ms(c, "run", 2.5)
            assert codes.count(202) == 1 and set(codes) == {202, 409}, codes
            rid = live.store.get_run_by_name("run")["id"]
            applied = wait_for(lambda: live.store.commands(rid, "applied"), what="the division", proc=first)
            assert len(applied) == 1 and live.store.commands(rid, "pending") == []
            lrs = [e["payload"]["new_lr"] for e in live.store.events(rid, kinds=["lr_change"])]
            assert lrs == [pytest.approx(1e-5)] and live.store.get_run(rid)["lr"] == pytest.approx(1e-5)

            # Item 7: the run store's disk fills up; training and its checkpoints go on.
            filler = _fill(disk)
            before = checkpoint(run_dir)["step"]
            wait_for(lambda: "cannot be written" in log.read_text(), what="the warning", proc=first)
            wait_for(lambda: checkpoint(run_dir)["step"] >= before + 3, what="checkpoints on a full store",
                     proc=first)
            assert log.read_text().count("cannot be written") == 1

            # Row 4: the second trainer on the same run dir was refused, naming the holder.
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err[-2000:]
            assert f"pid {first.pid} on host {socket.gethostname()}" in err and "Traceback" not in err

            filler.unlink()
            wait_for(lambda: "is written again" in log.read_text(), what="the store's recovery", proc=first)

            # Row 15: kill -9. The row still says running; readers say interrupted and refuse commands.
            kill9(first)
            assert c.get("/api/runs/run").json()["status"] == "interrupted"
            assert 'alexnet_run_info{run="run",status="interrupted"} 1' in c.get("/metrics").text
            r = c.post("/api/runs/run/lr/divide", json={"factor": 2, "reason": "late"}, headers=auth())
            assert r.status_code == 409 and f"pid {first.pid}" in r.json()["detail"]

            # The kernel released the lock: the next trainer (here the test, as --resume auto does)
            # takes the run back, and commands are judged on their merits again (the LR is at the floor).
            lock = RunLock(run_dir)
            live.store.start_run("run", live.store.get_run(rid)["config"], holder=lock.info)
            assert c.get("/api/runs/run").json()["status"] == "running"
            r = c.post("/api/runs/run/lr/divide", json={"factor": 1.5, "reason": "back"}, headers=auth())
            assert r.status_code == 409 and "minimum" in r.json()["detail"], r.text
            lock.release()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                kill9(proc)


def test_the_trainer_rejects_a_division_under_its_min_lr(tmp_path):
    """Row 8, the trainer's side: it never checked --min-lr; now it refuses, with the reason in
    the command's row, any division that would take the LR (after the replays still to come)
    under it. A command the server let through (another --min-lr, a race) is caught here."""
    store = RunStore(tmp_path / "runs.db")
    rid, _ = store.start_run("r", {"run_dir": ""}, lr=1e-4)
    first, _ = store.submit_lr_divide(rid, 10, reason="a", min_lr=1e-9)
    second, _ = store.submit_lr_divide(rid, 10, reason="b", min_lr=1e-9)
    control = Control(World(), store, rid, checkpoint_seconds=1e9, poll_seconds=0, min_lr=1e-5)
    decision = control.exchange(3, 1e-4)
    assert [c["id"] for c in decision.commands] == [first.id] and decision.new_lr == pytest.approx(1e-5)
    control.record(decision, 3, 1e-4)
    assert store.get_run(rid)["lr"] == pytest.approx(1e-5)  # set with the verdict, not a second later
    refused = store.get_command(second.id)
    assert refused.state == "rejected" and "--min-lr" in refused.detail and refused.applied_step == 3

    # A replay still to come counts: 1e-3 / 2 now and / 10 at step 10 would end at 5e-5 < 1e-4.
    third, _ = store.submit_lr_divide(rid, 2, reason="c", min_lr=1e-9)
    replaying = Control(World(), store, rid, checkpoint_seconds=1e9, poll_seconds=0, min_lr=1e-4,
                        replays=[{"id": first.id, "step": 10, "factor": 10.0}])
    assert replaying.exchange(4, 1e-3).new_lr is None
    assert store.get_command(third.id).state == "rejected"
    assert math.isclose(replaying.exchange(10, 1e-3).new_lr, 1e-4)  # the replay itself always applies
    store.close()


def test_a_second_lock_names_the_holder_and_a_closed_one_frees_the_run(tmp_path):
    """Row 4 at the unit level: flock, the holder's pid and host in the file, O_CLOEXEC."""
    import fcntl

    from trainer.runstore.runlock import RunLocked, lock_held, read_holder

    held = RunLock(tmp_path)
    assert fcntl.fcntl(held.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert read_holder(tmp_path)["pid"] == held.info["pid"] and lock_held(tmp_path) is True
    t0 = time.monotonic()
    with pytest.raises(RunLocked, match=f"pid {held.info['pid']} on host {socket.gethostname()}"):
        RunLock(tmp_path)
    assert time.monotonic() - t0 < 5
    held.release()
    assert lock_held(tmp_path) is False
    RunLock(tmp_path).release()
    assert json.loads((tmp_path / ".lock").read_text())["host"] == socket.gethostname()
    assert threading.active_count() >= 1


def test_a_full_store_keeps_a_bounded_buffer_and_writes_it_later(tmp_path, small_disk, monkeypatch):
    """Item 7, the store's side: a full runs.db raised out of the trainer's loop (the run died
    without a checkpoint). Now rows wait in a bounded buffer, a command's verdict is retried,
    and one warning line (and one on recovery) is all the terminal sees."""
    import trainer.runstore as rs
    from trainer.run.storeguard import GuardedStore

    monkeypatch.setattr(rs.store, "MAX_BUFFERED_ROWS", 50)
    disk = small_disk(512)
    raw = RunStore(disk / "runs.db", flush_interval=0)
    rid, _ = raw.start_run("r", {"run_dir": ""}, lr=0.01)
    cmd, _ = raw.submit_lr_divide(rid, 10, reason="x")
    lines = []
    store = GuardedStore(raw, warn=lambda line, **_: lines.append(line))
    filler = _fill(disk)
    for step in range(200):
        store.log_metrics(rid, step, 0.0, {rs.LOSS: 1.0, rs.LR: 0.01})
    store.mark_command(cmd.id, "applied", step=199, lr=0.001)
    assert len(raw._metric_buf) == 50 and raw.dropped_rows == 2 * 200 - 50
    assert len(lines) == 1 and "cannot be written" in lines[0] and "runs.db" in lines[0]
    filler.unlink()
    store.flush()
    assert [r["step"] for r in raw.metric_series(rid, rs.LOSS)] == list(range(175, 200))
    assert raw.get_command(cmd.id).state == "applied" and raw.get_run(rid)["lr"] == pytest.approx(0.001)
    assert len(lines) == 2 and "350 metric/event rows were dropped" in lines[1]
    raw.close()
