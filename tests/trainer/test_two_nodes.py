"""Two nodes, simulated: two torchrun agents on this machine (`--nnodes 2`, one rank
each, a c10d rendezvous on 127.0.0.1), as docs/cluster.md's Slurm script starts them, one
per node. They train and checkpoint, a second launch resumes, and kill -9 of one agent
ends the other (its rank names the failure) within 60 s, with nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests import strays
from trainer.runstore import RunStore
from trainer_helpers import REPO, TINY, checkpoint, env, last_step, read_trace

FLAGS = [*TINY, "--batch-size", "16", "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60"]


def agents(data, run_dir, tmp_path, port: int, name: str, *args: str) -> list[subprocess.Popen]:
    procs = []
    for node in (0, 1):
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", name, "--log-dir", str(tmp_path / f"elastic-{name}-{node}"),
                "-m", "trainer", "train", "--data", str(data), "--run-dir", str(run_dir), *FLAGS, *args]
        with open(tmp_path / f"{name}-node{node}.log", "w") as out:
            procs.append(subprocess.Popen(argv, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs



@pytest.mark.slow
def test_two_agents_train_resume_and_end_together(id_shards, tmp_path, free_tcp_port):
    run_dir = tmp_path / "two"
    first = agents(id_shards, run_dir, tmp_path, free_tcp_port, "first", "--max-steps", "9")
    try:
        rcs = [p.wait(timeout=300) for p in first]
    finally:
        strays.kill_group(*first)
    logs = [(tmp_path / f"first-node{n}.log").read_text() for n in (0, 1)]
    assert rcs == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "trainer: 2 ranks (1 on this node)" in logs[0] + logs[1]
    assert checkpoint(run_dir)["step"] == 9 and len(checkpoint(run_dir)["rng"]) == 2

    second = agents(id_shards, run_dir, tmp_path, free_tcp_port, "second", "--epochs", "100",
                    "--step-delay", "0.2", "--trace", str(tmp_path / "t"))
    try:
        deadline = time.monotonic() + 300
        while last_step(tmp_path / "t.rank1") < 12 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in second), "an agent ended early"
            time.sleep(0.05)
        steps, _ = read_trace(tmp_path / "t.rank0")
        assert steps[0]["step"] == 10, "the second launch resumes after step 9"
        os.kill(second[1].pid, signal.SIGKILL)  # node 1's agent; its rank dies with it
        killed = time.monotonic()
        survivor = second[0]
        rc = survivor.wait(timeout=120)
        took = time.monotonic() - killed
    finally:
        strays.kill_group(*second)
    assert rc != 0 and took < 60, f"the other node's agent took {took:.0f} s (rc {rc})"
    assert strays.group_gone(second[0].pid) and strays.group_gone(second[1].pid), f"left running: {strays.running_strays(0)}"
    run = RunStore(tmp_path / "runs.db").get_run_by_name("two")
    assert run["status"] == "failed", run["status"]  # rank 0 saw its peer go and said so
    print(f"kill -9 of node 1's agent: node 0's agent ended after {took:.1f} s with status {rc}")
