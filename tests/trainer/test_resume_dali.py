"""`trainer train --backend dali` (what the compose trainer runs on a GPU), here on the
CPU: a few steps with a checkpoint at each, kill -9, `--resume auto`, and the same samples,
augmentation and weights as the uninterrupted run."""

from __future__ import annotations

import pytest

from trainer_helpers import checkpoint, kill9, last_step, read_trace, rel_diff, run_train, start_train, wait_for

N = 10  # inside epoch 0 (15 steps of the 120 id_shards images at batch 8)
FLAGS = ["--backend", "dali", "--max-steps", str(N), "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "0"]


@pytest.mark.slow
def test_dali_backend_sigkill_then_resume_equals_the_uninterrupted_run(id_shards, tmp_path):
    straight = start_train(id_shards, tmp_path / "straight", *FLAGS, "--trace", str(tmp_path / "s"),
                           log=tmp_path / "straight.log")
    victim = start_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v1"),
                         "--step-delay", "0.2", log=tmp_path / "victim.log")
    wait_for(lambda: last_step(tmp_path / "v1.rank0") >= 4, what="step 4", proc=victim)
    kill9(victim)
    done = run_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-2000:]
    assert "resumed from" in done.stdout

    first, _ = read_trace(tmp_path / "v1.rank0")
    second, _ = read_trace(tmp_path / "v2.rank0")
    reference, _ = read_trace(tmp_path / "s.rank0")
    resumed_at = second[0]["step"] - 1
    assert 3 <= resumed_at < N, "the kill should land mid-run, after a checkpoint"
    combined = [r for r in first if r["step"] <= resumed_at] + second
    assert [r["step"] for r in combined] == list(range(1, N + 1))
    # DALI's own reader and random-op state came back from the checkpoint: the same
    # samples in the same order with the same crops, flips and lighting.
    assert [(r["labels"], r["fp"]) for r in combined] == [(r["labels"], r["fp"]) for r in reference]
    a, b = checkpoint(tmp_path / "victim"), checkpoint(tmp_path / "straight")
    assert a["step"] == b["step"] == N and a["data_state"][0]["backend"] == "dali"
    assert rel_diff(a["model"], b["model"]) <= 1e-6
