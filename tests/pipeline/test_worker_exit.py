"""The reference loader's workers (forked by a forkserver, not by the trainer) end when
the trainer process is killed with SIGKILL, and the forkserver with them: a crashed or
OOM-killed trainer leaves no processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, time
from pipeline import make_loader
if __name__ == "__main__":
    loader = make_loader(sys.argv[1], batch_size=4, backend="reference", num_workers=2)
    batches = iter(loader)
    next(batches)
    print("iterating", flush=True)
    time.sleep(600)
"""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_and_forkserver_exit_when_the_trainer_is_killed(shard_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(shard_dir)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "iterating"
        left = _descendants(proc.pid)
        assert len(left) >= 3, "expected a forkserver and two workers"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in left):
        time.sleep(0.1)
    stray = [p for p in left if _alive(p)]
    for pid in stray:  # do not leave them to the next test, whatever the verdict
        os.kill(pid, signal.SIGKILL)
    assert not stray, f"processes left after the trainer was killed: {stray}"
