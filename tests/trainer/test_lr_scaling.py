"""--lr-scaling linear --warmup-epochs K (trainer/run/lrscaling.py): the run starts from
--lr x batch/128, recorded as such; over K epochs the optimizer's LR moves step by step
from --lr to it; without the flags the LR is the paper's, untouched."""

from __future__ import annotations

import pytest
import torch

from trainer.run.config import TrainConfig
from trainer.run.lrscaling import Warmup, initial_lr
from trainer_helpers import checkpoint, run_train


def cfg(**kw) -> TrainConfig:
    return TrainConfig(data="d", run_dir="r", **kw)


def test_linear_scaling_and_its_ramp():
    assert initial_lr(cfg(batch_size=1024)) == (0.01, "initial")  # the paper's: no scaling
    lr, why = initial_lr(cfg(batch_size=1024, lr_scaling="linear"))
    assert lr == pytest.approx(0.08) and "x batch 1024/128" in why and "not the paper's" in why
    w = Warmup.of(cfg(batch_size=1024, lr_scaling="linear", warmup_epochs=5), steps_per_epoch=100)
    assert w.steps == 500 and w.ramp(0) * 0.08 == pytest.approx(0.01)
    assert w.ramp(250) * 0.08 == pytest.approx(0.045) and w.ramp(500) == w.ramp(10**6) == 1.0
    assert not Warmup.of(cfg(batch_size=1024), steps_per_epoch=100).active


def test_the_optimizer_follows_the_ramp_and_the_record_says_why(id_shards, tmp_path):
    # batch 8: scaled LR 0.01 x 8/128 = 0.000625; a warm-up of one epoch (15 steps)
    done = run_train(id_shards, tmp_path / "run", "--lr-scaling", "linear", "--warmup-epochs", "1",
                     "--max-steps", "5", "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LR 0.000625 = 0.01 x 8/128 (--lr-scaling linear, warm-up 1 epochs; not the paper's)" in done.stdout
    ck = checkpoint(tmp_path / "run")
    assert ck["lr"] == pytest.approx(0.000625) and "--lr-scaling linear" in ck["lr_history"][0]["reason"]
    assert ck["config"]["lr_scaling"] == "linear" and ck["config"]["warmup_epochs"] == 1
    # the 5th step (step index 4) ran at 0.000625 x (16 - 15 x 4/15) = 0.0075
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0075)


def test_warmup_without_scaling_is_refused(id_shards, tmp_path):
    done = run_train(id_shards, tmp_path / "run", "--warmup-epochs", "2", "--max-steps", "1")
    assert done.returncode == 2 and "give it with --lr-scaling linear" in done.stderr
