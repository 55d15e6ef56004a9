"""`--lr-policy plateau` and `step` inside `trainer train`, and their state across kill -9:
a resumed run continues the policy's patience counter and drop count from its checkpoint,
so it divides the LR at the same steps, and no more often, than an uninterrupted run.

Every run here has 3 steps an epoch (demo shards: 120 images, batch 40) and LR 1e-12, far
below float32's resolution of the weights: the net does not change, so its validation
error is the same after every epoch and the plateau rule's decisions are known by hand.
"""

from __future__ import annotations

import pytest

from trainer.runstore import RunStore
from trainer_helpers import checkpoint, kill9, last_step, run_train, start_train, wait_for

LR = 1e-12
COMMON = ["--batch-size", "40", "--lr", str(LR), "--lr-factor", "10", "--max-drops", "2", "--no-tencrop",
          "--checkpoint-minutes", "60"]


def _killed_in_epoch_then_resumed(data, tmp_path, epoch: int, flags: list[str]) -> dict:
    """Run with `flags`, kill -9 after the first step of epoch `epoch` (counted from 1),
    resume with --resume auto to the end; returns the final checkpoint."""
    run_dir = tmp_path / "run"
    victim = start_train(data, run_dir, *COMMON, *flags, "--step-delay", "0.3", "--trace", str(tmp_path / "t"),
                         log=tmp_path / "victim.log")
    wait_for(lambda: last_step(tmp_path / "t.rank0") >= 3 * (epoch - 1) + 1, what=f"epoch {epoch}", proc=victim)
    kill9(victim)
    resumed = run_train(data, run_dir, *COMMON, *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {run_dir / 'checkpoints' / 'last.pt'} at step {3 * (epoch - 1)}" in resumed.stdout, \
        "the kill should land inside the epoch, after the previous epoch's checkpoint"
    return checkpoint(run_dir)


def _drops(ckpt: dict) -> list[tuple[int, float, str]]:
    return [(h["step"], h["lr"], h["reason"].split(":")[0]) for h in ckpt["lr_history"][1:]]


@pytest.mark.slow
def test_plateau_counts_patience_and_drops_across_a_kill(demo_shards, tmp_path):
    # Constant error: best after epoch 1, then 2 epochs without improvement -> divide after
    # epochs 3 and 5 (steps 9 and 15); max 2 drops, so not after epoch 7. The kill lands in
    # epoch 5, after a checkpoint that holds 1 bad epoch and 1 drop.
    ckpt = _killed_in_epoch_then_resumed(demo_shards, tmp_path, 5,
                                         ["--lr-policy", "plateau", "--patience", "2", "--epochs", "7"])
    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("run")
    errors = [r["value"] for r in store.metric_series(run["id"], "val_top1_error")]
    assert len(errors) == 7 and len(set(errors)) == 1, f"the error should not move at LR {LR}: {errors}"
    assert _drops(ckpt) == [(9, pytest.approx(LR / 10), "plateau"), (15, pytest.approx(LR / 100), "plateau")]
    assert ckpt["step"] == 21 and ckpt["lr"] == pytest.approx(LR / 100)
    changes = [(e["step"], e["payload"]["policy"]) for e in store.events(run["id"], kinds=["lr_change"])]
    assert changes == [(9, "plateau"), (15, "plateau")]


@pytest.mark.slow
def test_step_policy_counts_drops_across_a_kill(demo_shards, tmp_path):
    # Every epoch, at most twice: after epochs 1 and 2 (steps 3 and 6), not after 3.
    # The kill lands in epoch 2, after a checkpoint that holds 1 drop.
    ckpt = _killed_in_epoch_then_resumed(demo_shards, tmp_path, 2,
                                         ["--lr-policy", "step", "--step-epochs", "1", "--epochs", "3",
                                          "--val-every", "0"])
    assert _drops(ckpt) == [(3, pytest.approx(LR / 10), "step"), (6, pytest.approx(LR / 100), "step")]
    assert ckpt["step"] == 9
