"""`--compile auto|on|off` (trainer.run.compiled) and the static-shape batch it relies on.

The rule and the masked-row loss are checked fast. The compiled run is a real `trainer
train --compile on` on the CPU (inductor with gcc; tens of seconds): it shows its compile
on the terminal and in the run store, and an LR division, the epoch's validation and a
resume in a new process compile nothing more than its first step did.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from pipeline.base import DAMAGED
from trainer.run import config as config_mod
from trainer.run.compiled import compile_enabled
from trainer.run.step import batch_loss
from trainer.runstore import RunStore
from trainer_helpers import checkpoint, run_train


def test_auto_compiles_on_cuda_only_and_on_or_off_win():
    assert compile_enabled("auto", "cuda") and compile_enabled("auto", torch.device("cuda", 1))
    assert not compile_enabled("auto", "cpu")
    assert compile_enabled("on", "cpu") and not compile_enabled("off", "cuda")
    with pytest.raises(ValueError, match="auto, on, off"):
        compile_enabled("yes", "cpu")


def test_the_compile_flag_takes_auto_on_off_and_defaults_to_auto(capsys):
    parser = argparse.ArgumentParser()
    config_mod.add_arguments(parser)
    base = ["--data", "d", "--run-dir", "r"]
    assert config_mod.from_args(parser.parse_args(base)).compile == "auto"
    assert config_mod.from_args(parser.parse_args([*base, "--compile", "on"])).compile == "on"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--compile", "sometimes"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_masked_row_adds_nothing_to_the_loss_or_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 3, DAMAGED, 4, DAMAGED, 1])
    real = labels != DAMAGED
    loss = batch_loss(logits, labels)
    loss.backward()
    alone = logits.detach()[real].clone().requires_grad_(True)
    expected = F.cross_entropy(alone, labels[real])
    expected.backward()
    assert torch.allclose(loss, expected, rtol=1e-6)
    assert torch.allclose(logits.grad[real], alone.grad, rtol=1e-6) and not logits.grad[~real].any()


def test_a_batch_of_damaged_rows_gives_a_zero_loss_not_nan():
    logits = torch.randn(3, 5, requires_grad=True)
    loss = batch_loss(logits, torch.full((3,), DAMAGED))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.slow
def test_a_compiled_run_compiles_once_across_lr_divisions_validation_and_a_resume(demo_shards, tmp_path):
    # 3 steps an epoch (120 images, batch 40); the step policy divides the LR after each
    # epoch. The first process stops at step 4 (after a division, a validation and a
    # checkpoint), the second resumes there and divides again after epoch 2.
    run_dir = tmp_path / "run"
    flags = ["--compile", "on", "--batch-size", "40", "--epochs", "3", "--lr-policy", "step", "--step-epochs", "1",
             "--max-drops", "2", "--no-tencrop", "--checkpoint-minutes", "60"]
    first = run_train(demo_shards, run_dir, *flags, "--max-steps", "4", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "compiling the step" in first.stdout and "compiled in" in first.stdout
    resumed = run_train(demo_shards, run_dir, *flags, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "compiled in" in resumed.stdout
    assert "compiled again" not in first.stdout + resumed.stdout

    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("run")
    compiled = store.events(run["id"], kinds=["compiled"])
    assert [e["step"] for e in compiled] == [0, 4]  # each process's first step, nothing after
    assert compiled[0]["payload"]["graphs"] == compiled[1]["payload"]["graphs"] >= 2  # the step, the update
    assert store.events(run["id"], kinds=["recompiled"]) == []
    ckpt = checkpoint(run_dir)
    assert [(h["step"], h["reason"].split(":")[0]) for h in ckpt["lr_history"][1:]] == [(3, "step"), (6, "step")]
    assert ckpt["step"] == 9
    progress = run["progress"]
    assert progress["compiling_since"] is None and progress["compile_s"] > 0


@pytest.mark.slow
def test_a_recompile_after_the_first_step_is_recorded_and_said():
    # What the run test above relies on: a second graph (here a new input shape) is noticed.
    from trainer.run.compiled import RunCompile, compile_net

    torch._dynamo.reset()
    said, events, marks = [], [], []
    net = compile_net(torch.nn.Linear(4, 2), True)
    run = RunCompile(True, say=said.append, mark=marks.append, event=lambda k, p: events.append((k, p)))
    assert run.pending
    run.first_step(net, torch.randn(3, 4))
    assert not run.pending and events[0][0] == "compiled" and events[0][1]["graphs"] >= 1
    assert marks[0] is not None and marks[-1] is None and said[-1].startswith("compiled in")
    run.check()
    assert len(events) == 1  # nothing compiled since
    net(torch.randn(5, 4))  # another shape: dynamic=False compiles a second graph
    run.check()
    assert events[-1][0] == "recompiled" and "compiled again" in said[-1]
