"""The run's first line says its layout and the node's CPU budget."""

from __future__ import annotations

from trainer_helpers import run_train


def test_start_line_says_the_cpu_budget(id_shards, tmp_path):
    done = run_train(id_shards, tmp_path / "run", "--max-steps", "1", "--val-every", "0", "--no-tencrop")
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith("trainer: 1 process on cpu, batch 8 (8 a rank); CPU budget: "), first
    assert "each rank 1 loader process + the trainer = 2" in first, first
