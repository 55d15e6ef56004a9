"""--grad-bf16 under torchrun with gloo: the gradients are all-reduced in bf16, and the
loss follows the fp32 run's closely (same data, same seed) without being the same run;
a per-rank batch under 32 prints one warning with the numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainer.runstore import RunStore
from trainer_helpers import REPO, TINY, checkpoint, env, rel_diff

N = 14  # 120 images over 2 ranks at 8 a rank: 7 steps an epoch


def run(data, tmp_path, name: str, *args: str) -> str:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--log-dir", str(tmp_path / f"elastic-{name}"), "-m", "trainer", "train", "--data", str(data),
            "--run-dir", str(tmp_path / name), *TINY, "--batch-size", "16", "--max-steps", str(N),
            "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "60", "--log-every", "7", *args]
    done = subprocess.run(argv, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bf16_gradients_follow_the_fp32_loss(id_shards, tmp_path):
    fp32 = run(id_shards, tmp_path, "fp32")
    bf16 = run(id_shards, tmp_path, "bf16", "--grad-bf16")
    layout = lambda out: next(line for line in out.splitlines() if line.startswith("trainer: "))  # noqa: E731
    assert "gradients all-reduced in bf16" in layout(bf16) and "bf16" not in layout(fp32)
    warnings = [line for line in fp32.splitlines() if "warning: --batch-size 16" in line]
    assert len(warnings) == 1 and "each trains 8 images a step (under 32)" in warnings[0], fp32[:2000]
    store = RunStore(tmp_path / "runs.db")
    losses = {name: [r["value"] for r in store.metric_series(store.get_run_by_name(name)["id"], "train_loss")]
              for name in ("fp32", "bf16")}
    assert len(losses["fp32"]) == len(losses["bf16"]) == 2
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert b == pytest.approx(a, rel=0.02), losses
    # ... and it is not the fp32 run again: the weights differ, a little.
    diff = rel_diff(checkpoint(tmp_path / "bf16")["model"], checkpoint(tmp_path / "fp32")["model"])
    assert 0 < diff < 0.05, diff
