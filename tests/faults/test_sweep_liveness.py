"""Issue 26, row 8: after `preprocess shard` is killed with SIGKILL and rerun at once, no
temporary file of a dead writer is left. The killed run's workers are zombies for a while
(their parent is gone; whoever adopts them reaps them later), and the sweep counted a
zombie as alive; now a zombie is dead (`common.procs.alive`, the one liveness rule)
and `preprocess shard` sweeps again at its end.

Runs are in-process on a few images of the session's `demo_corpus`, except the last test,
which kills a real `preprocess shard` as the issue did."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import procs
from common.tempfiles import temp_path
from preprocess import run
from preprocess.cli import main
from tests.faults.corpora import tiny_corpus
from preprocess.contract import WORK_DIR

RUN = ["--workers", "1", "--progress", "off"]



def _temp_of(path: Path, pid: int) -> Path:
    """The temporary name process `pid` of this host writes `path` under."""
    return Path(str(temp_path(path)).replace(f".tmp{os.getpid()}-", f".tmp{pid}-"))


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def zombie():
    proc = subprocess.Popen(["true"])  # never waited for until the end: a zombie meanwhile
    deadline = time.monotonic() + 10
    while _state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(proc.pid) == "Z"
    yield proc.pid
    proc.wait()


def test_a_zombie_is_dead_to_the_one_liveness_rule(zombie):
    assert not procs.alive(zombie)
    assert procs.alive(os.getpid())


def test_a_zombie_writers_temporary_files_are_swept(demo_corpus, tmp_path, zombie):
    src, out = tiny_corpus(demo_corpus, tmp_path / "src"), tmp_path / "out"
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    left = [_temp_of(out / WORK_DIR / "train-u000000-p0.tar", zombie), _temp_of(out / "dataset.json", zombie)]
    for p in left:
        p.write_bytes(b"half a shard")
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    assert not [p.name for p in left if p.exists()]


def test_shard_sweeps_again_at_its_end(demo_corpus, tmp_path, monkeypatch):
    """A writer still alive when the rerun starts (a killed worker not yet dead) and gone
    before it ends: its file is swept by the end, not left for the run after."""
    src, out = tiny_corpus(demo_corpus, tmp_path / "src"), tmp_path / "out"
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    (out / "dataset.json").unlink()  # the rerun has work to do
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    left = _temp_of(out / WORK_DIR / "train-u000000-p0.tar", writer.pid)
    left.write_bytes(b"half a shard")
    run_units = run._run_units

    def writer_dies_meanwhile(*args, **kwargs):
        assert left.exists(), "the first sweep removed a live writer's file"
        writer.kill()
        writer.wait()
        return run_units(*args, **kwargs)

    monkeypatch.setattr(run, "_run_units", writer_dies_meanwhile)
    try:
        assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    finally:
        writer.kill()
        writer.wait()
    assert not left.exists()


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if ".tmp" in p.name)


@pytest.mark.slow
def test_a_rerun_right_after_sigkill_leaves_no_temporary_file(demo_corpus, tmp_path):
    """As the issue did it: SIGKILL mid-run (workers mid-unit), rerun at once, three times."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "preprocess.cli", "shard", "--src", str(demo_corpus), "--out", str(out),
            "--workers", "2", "--shard-max-count", "16", "--progress", "off"]
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        killed = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not _temps(out) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert _temps(out) == []
