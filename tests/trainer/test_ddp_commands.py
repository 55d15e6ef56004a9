"""Operator commands under DDP without a per-step barrier: three gloo ranks under torchrun.
A divide submitted mid-epoch is applied once, at the same step (a multiple of
--control-every) on every rank; after kill -9 of the whole group before the next
checkpoint, `--resume auto` replays it at that same step on every rank. The ranks'
control collectives are counted per step (`--trace` records them): between two exchange
steps the loop runs none, only DDP's own gradient all-reduce."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import strays
from trainer.runstore import RunStore
from trainer_helpers import REPO, TINY, checkpoint, env, last_step, read_trace, wait_for

EVERY, LOG = 4, 8
# 120 images over 3 ranks at 4 a rank: 10 steps an epoch, epoch checkpoints at 10, 20, ...
FLAGS = [*TINY, "--batch-size", "12", "--log-every", str(LOG), "--control-every", str(EVERY),
         "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60"]


def torchrun(data, run_dir, tmp_path, log_name: str, *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
            "--log-dir", str(tmp_path / f"elastic-{log_name}"), "-m", "trainer", "train", "--data", str(data),
            "--run-dir", str(run_dir), *FLAGS, *args]
    with open(tmp_path / f"{log_name}.log", "w") as out:
        # Its own session, so that the whole group (agent, ranks, loader workers) can be killed.
        return subprocess.Popen(argv, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def control_collectives_per_step(trace: list[dict]) -> dict[int, int]:
    """{step s: control collectives run between the records of steps s-1 and s}, in epoch 0."""
    by_step = {r["step"]: r["collectives"] for r in trace if r["epoch"] == 0}
    return {s: by_step[s] - by_step[s - 1] for s in sorted(by_step) if s - 1 in by_step}


@pytest.mark.slow
def test_divide_applied_at_one_step_on_three_ranks_across_kill9_and_resume(id_shards, tmp_path):
    run_dir = tmp_path / "ddp3"
    proc = torchrun(id_shards, run_dir, tmp_path, "first", "--epochs", "100", "--step-delay", "0.3",
                    "--trace", str(tmp_path / "t1"))
    try:
        wait_for(lambda: last_step(tmp_path / "t1.rank0") >= 11, timeout=300, what="epoch 1", proc=proc)
        store = RunStore(tmp_path / "runs.db")
        run_id = store.get_run_by_name("ddp3")["id"]
        cmd, _ = store.submit_lr_divide(run_id, 10, reason="mid-epoch", who="test")
        applied = wait_for(lambda: (c := store.get_command(cmd.id)).state == "applied" and c, timeout=120,
                           what="the command", proc=proc)
        strays.kill_group(proc)
    finally:
        strays.kill_group(proc)
    S = applied.applied_step
    assert S % EVERY == 0 and 12 <= S < 20, f"applied at step {S}: not an exchange step of epoch 1"
    assert checkpoint(run_dir)["step"] == 10, "the kill must precede the next checkpoint"
    first = [read_trace(tmp_path / f"t1.rank{r}")[0] for r in range(3)]
    for trace in first:
        assert [r["lr"] for r in trace] == [0.01 if r["step"] <= S else pytest.approx(0.001) for r in trace]

    # The loop's own control collectives: an exchange every EVERY steps, the loss every
    # LOG steps, none on the steps between (the old loop ran two at every step on the CPU).
    for trace in first:
        per_step = control_collectives_per_step(trace)
        assert len(per_step) == 9
        quiet = {s: n for s, n in per_step.items() if (s - 1) % EVERY and (s - 1) % LOG}
        assert quiet and set(quiet.values()) == {0}, per_step
        assert sum(per_step.values()) == 3, per_step  # exchanges at 4 and 8, the loss at 8
        print(f"control collectives per step, epoch 0: {per_step}")

    resumed = torchrun(id_shards, run_dir, tmp_path, "resumed", "--epochs", "100", "--max-steps", "24",
                       "--trace", str(tmp_path / "t2"))
    try:
        assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    finally:
        strays.kill_group(resumed)
    second = [read_trace(tmp_path / f"t2.rank{r}")[0] for r in range(3)]
    for trace in second:
        assert [r["step"] for r in trace] == list(range(11, 25))
        assert [r["lr"] for r in trace] == [0.01 if r["step"] <= S else pytest.approx(0.001) for r in trace]
    row = store.get_command(cmd.id)
    assert row.state == "applied" and row.applied_step == S
    changes = [(e["step"], e["payload"]["replayed"]) for e in store.events(run_id) if e["kind"] == "lr_change"]
    assert changes == [(S, False)]  # the replay writes no second event (issue 26, row 13)
    final = checkpoint(run_dir)
    assert final["step"] == 24 and final["applied_commands"] == [{"id": cmd.id, "step": S, "factor": 10.0}]
    assert store.get_run_by_name("ddp3")["status"] == "finished"
