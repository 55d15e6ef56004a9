"""Running `trainer train` as a real subprocess in the trainer tests, and reading what it left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
# A tiny net and batch: the run's logic is what is under test, not its arithmetic.
TINY = ["--width", "0.0625", "--batch-size", "8", "--num-workers", "1", "--log-every", "2",
        "--device", "cpu", "--backend", "reference"]


def env() -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def train_argv(data: Path, run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "train", "--data", str(data), "--run-dir", str(run_dir), *TINY, *args]


def run_train(data: Path, run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_argv(data, run_dir, *args), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def start_train(data: Path, run_dir: Path, *args: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen(train_argv(data, run_dir, *args), cwd=REPO, env=env(), stdout=out,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float = 120, what: str = "condition", proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def read_trace(path: Path) -> tuple[list[dict], str | None]:
    """(per-step records, final parameter digest or None). A line torn by SIGKILL is dropped."""
    steps, final = [], None
    if not path.exists():
        return steps, final
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "final_params" in rec:
            final = rec["final_params"]
        else:
            steps.append(rec)
    return steps, final


def last_step(path: Path) -> int:
    steps, _ = read_trace(path)
    return steps[-1]["step"] if steps else 0


def checkpoint(run_dir: Path) -> dict:
    from trainer.run.ckptfile import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def rel_diff(a: dict, b: dict) -> float:
    """Largest relative difference over the tensors of two state dicts."""
    worst = 0.0
    for k in a:
        x, y = a[k].double(), b[k].double()
        worst = max(worst, float((x - y).norm() / max(y.norm(), 1e-12)))
    return worst


def digest(tensors: dict) -> str:
    return json.dumps({k: float(v.double().sum()) for k, v in tensors.items()})


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values())
