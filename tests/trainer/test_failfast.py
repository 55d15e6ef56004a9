"""A failed or a hung rank ends the group in seconds (trainer/run/failfast.py): two gloo
ranks under torchrun, a fault injected into one rank's 9th step by a sitecustomize that
only the chosen rank acts on. Every rank ends within 60 s, the failing rank is named on
the log and in the run store, nothing is left running, and `--resume auto` continues."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests import strays
from trainer_helpers import REPO, TINY, checkpoint, env, last_step, read_trace
from trainer.runstore import RunStore

WITHIN_S = 60
# 120 images over 2 ranks at 8 a rank: 7 steps an epoch, the epoch checkpoint at step 7.
FLAGS = [*TINY, "--batch-size", "16", "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60"]

INJECT = """
import os
rank, fault, at = os.environ.get("RANK"), *os.environ.get("TEST_FAULT", "::").split(":")[::2]
if fault and rank == os.environ["TEST_FAULT"].split(":")[1]:
    import time
    import trainer.run.step as step

    original, calls = step.TrainStep.__call__, [0]

    def call(self, images, labels):
        calls[0] += 1
        if calls[0] == int(at):
            if fault == "raise":
                raise RuntimeError("injected fault")
            time.sleep(10**6)  # hung: the GIL is free, as in a blocked read or a DALI wait
        return original(self, images, labels)

    step.TrainStep.__call__ = call
"""


def torchrun(data, run_dir, tmp_path, name: str, *args: str, fault: str = "") -> subprocess.Popen:
    (tmp_path / "inject").mkdir(exist_ok=True)
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)
    e = env()
    if fault:
        e["TEST_FAULT"] = fault
        e["PYTHONPATH"] = str(tmp_path / "inject") + os.pathsep + e["PYTHONPATH"]
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--log-dir", str(tmp_path / f"elastic-{name}"), "-m", "trainer", "train", "--data", str(data),
            "--run-dir", str(run_dir), *FLAGS, *args]
    with open(tmp_path / f"{name}.log", "w") as out:
        return subprocess.Popen(argv, cwd=REPO, env=e, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)



@pytest.mark.slow
@pytest.mark.parametrize("fault, said", [
    ("raise:1:9", "rank 1 ("),                      # "rank 1 (host, pid): RuntimeError: injected fault"
    ("hang:1:9", "rank 1 hung: its main thread has not moved for"),
])
def test_a_failed_rank_ends_the_group_naming_it(id_shards, tmp_path, fault, said):
    run_dir = tmp_path / "ff"
    proc = torchrun(id_shards, run_dir, tmp_path, "faulty", "--epochs", "100", "--hang-timeout", "5",
                    "--trace", str(tmp_path / "t"), fault=fault)
    try:
        deadline = time.monotonic() + 300
        while last_step(tmp_path / "t.rank1") < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = time.monotonic()  # rank 1 took its 8th step; its 9th is the fault
        rc = proc.wait(timeout=300)
        took = time.monotonic() - seen
    finally:
        strays.kill_group(proc)
    log = (tmp_path / "faulty.log").read_text()
    assert rc != 0, log[-3000:]
    assert took < WITHIN_S, f"the group took {took:.0f} s to end"
    assert said in log and "ends (status 6); continue with --resume auto" in log, log[-3000:]
    if fault.startswith("raise"):
        assert "RuntimeError: injected fault" in log
    assert strays.group_gone(proc.pid), f"left running: {strays.running_strays(0)}"
    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("ff")
    assert run["status"] == "failed"
    failures = [e["payload"]["message"] for e in store.events(run["id"]) if e["kind"] == "rank_failed"]
    assert failures and said in failures[0], failures
    assert checkpoint(run_dir)["step"] == 7
    stopped, _ = read_trace(tmp_path / "t.rank0")

    resumed = torchrun(id_shards, run_dir, tmp_path, "resumed", "--epochs", "100", "--max-steps", "12",
                       "--trace", str(tmp_path / "t2"))
    try:
        assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    finally:
        strays.kill_group(resumed)
    for rank in (0, 1):
        assert [r["step"] for r in read_trace(tmp_path / f"t2.rank{rank}")[0]] == list(range(8, 13))
    assert store.get_run_by_name("ff")["status"] == "finished"
    print(f"{fault}: every rank ended {took:.1f} s after rank 1's last step; torchrun exit status {rc}")


def test_torch_compile_and_collectives_are_waits_not_hangs():
    """A rank compiling its first step (Dynamo, Inductor waiting on its workers) keeps a
    still stack for tens of seconds on a GPU: that must not be named a hang, nor a wait in
    a collective; the trainer's own code, or a standard-library sleep, can be."""
    from trainer.run import failfast

    site = os.path.join(os.sep, "venv", "lib", "python3.11", "site-packages", "torch")
    for part in ("_inductor/async_compile.py", "_dynamo/eval_frame.py", "distributed/distributed_c10d.py",
                 "nn/parallel/distributed.py", "autograd/graph.py"):
        assert failfast.waits_in(os.path.join(site, *part.split("/"))), part
    assert not failfast.waits_in(os.path.join(os.sep, "repo", "trainer", "run", "train.py"))
    assert not failfast.waits_in(os.path.join(os.sep, "usr", "lib", "python3.11", "threading.py"))
