"""The run's start lines: which run dir, data and store (the first), then its layout and the
node's CPU budget (the second)."""

from __future__ import annotations

from trainer_helpers import run_train


def test_start_line_says_the_cpu_budget(id_shards, tmp_path):
    done = run_train(id_shards, tmp_path / "run", "--max-steps", "1", "--val-every", "0", "--no-tencrop")
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()[:2]
    assert first.startswith("trainer train: a new run in "), first
    assert second.startswith("trainer: 1 process on cpu, batch 8 (8 a rank); CPU budget: "), second
    assert "each rank 1 loader process + the trainer = 2" in second, second
