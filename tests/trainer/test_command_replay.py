"""An operator's LR drop survives kill -9 between its application and the next checkpoint:
it is replayed at the same step on resume, never lost and never applied twice."""

from __future__ import annotations

import pytest

from trainer.runstore import RunStore
from trainer_helpers import (checkpoint, kill9, last_step, read_trace, rel_diff, run_train, start_train,
                             wait_for)

N = 32  # epoch checkpoints at steps 15 and 30 (120 images, batch 8); no timed ones
FLAGS = ["--max-steps", str(N), "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60"]


@pytest.mark.slow
def test_command_applied_after_the_last_checkpoint_is_replayed_once(id_shards, tmp_path):
    # Slowed so that the command (read once a second) lands between the checkpoints at 15 and 30.
    victim = start_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v1"),
                         "--step-delay", "0.12",
                         log=tmp_path / "victim.log")
    wait_for(lambda: last_step(tmp_path / "v1.rank0") >= 16, what="epoch 1", proc=victim)
    store = RunStore(tmp_path / "runs.db")
    run_id = store.get_run_by_name("victim")["id"]
    cmd, _ = store.submit_lr_divide(run_id, 10, reason="plateau seen by the operator", who="test")
    applied = wait_for(lambda: (c := store.get_command(cmd.id)).state == "applied" and c, what="the command",
                       proc=victim)
    kill9(victim)
    S = applied.applied_step
    ckpt = checkpoint(tmp_path / "victim")
    assert ckpt["step"] == 15 and ckpt["applied_commands"] == [], "the kill must precede the next checkpoint"
    assert 16 <= S < 30

    # The same schedule without a crash: stop at S, then the command is read at step S.
    ref = run_train(id_shards, tmp_path / "ref", *FLAGS[2:], "--max-steps", str(S))
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_id = store.get_run_by_name("ref")["id"]
    store.set_status(ref_id, "running")
    store.submit_lr_divide(ref_id, 10, who="test")

    resumed = run_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v2"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ref = run_train(id_shards, tmp_path / "ref", *FLAGS)
    assert ref.returncode == 0, ref.stderr[-2000:]

    row = store.get_command(cmd.id)
    assert row.state == "applied" and row.applied_step == S
    events = store.events(run_id)
    assert [e["payload"]["command_id"] for e in events if e["kind"] == "command_applied"] == [cmd.id]
    changes = [(e["step"], e["payload"]["replayed"]) for e in events if e["kind"] == "lr_change"]
    assert changes == [(S, False)]  # the replay writes no second event (issue 26 row 13)

    final, reference = checkpoint(tmp_path / "victim"), checkpoint(tmp_path / "ref")
    assert final["lr"] == pytest.approx(0.001, rel=1e-12)
    assert final["applied_commands"] == [{"id": cmd.id, "step": S, "factor": 10.0}]
    assert [(h["step"], h["lr"]) for h in final["lr_history"]] == [(0, 0.01), (S, pytest.approx(0.001))]
    assert [(h["step"], h["lr"]) for h in reference["lr_history"]] == [(0, 0.01), (S, pytest.approx(0.001))]
    steps, _ = read_trace(tmp_path / "v2.rank0")
    assert all(r["lr"] == (0.01 if r["step"] <= S else pytest.approx(0.001)) for r in steps)
    assert rel_diff(final["model"], reference["model"]) <= 1e-6
