"""`torchrun --nproc-per-node 2 -m trainer train` on the CPU with gloo: disjoint data per
rank, identical weights on both ranks, an operator command applied at the same step."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainer.runstore import RunStore
from trainer_helpers import REPO, TINY, env, last_step, read_trace, wait_for

N = 21  # 120 images over 2 ranks at 8 per rank: 7 batches a rank per epoch, 3 epochs


@pytest.mark.slow
def test_torchrun_two_ranks(id_shards, tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--log-dir", str(tmp_path / "elastic"), "-m", "trainer", "train", "--data", str(id_shards), "--run-dir", str(tmp_path / "ddp"), *TINY,
            "--batch-size", "16", "--max-steps", str(N), "--val-every", "1", "--no-tencrop",
            "--checkpoint-minutes", "60", "--trace", str(tmp_path / "t")]
    log = open(tmp_path / "torchrun.log", "w")
    proc = subprocess.Popen(argv, cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: last_step(tmp_path / "t.rank0") >= 3, what="step 3", proc=proc)
        store = RunStore(tmp_path / "runs.db")
        run_id = store.get_run_by_name("ddp")["id"]
        cmd, _ = store.submit_lr_divide(run_id, 10, who="test")
        assert proc.wait(timeout=300) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    rank0, digest0 = read_trace(tmp_path / "t.rank0")
    rank1, digest1 = read_trace(tmp_path / "t.rank1")
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(1, N + 1))
    for epoch in range(3):
        a = {x for r in rank0 if r["epoch"] == epoch for x in r["labels"]}
        b = {x for r in rank1 if r["epoch"] == epoch for x in r["labels"]}
        assert len(a) == len(b) == 56 and not a & b, f"epoch {epoch}: ranks must see disjoint samples"
    assert digest0 is not None and digest0 == digest1, "the ranks' weights differ"

    row = store.get_command(cmd.id)
    assert row.state == "applied" and 3 <= row.applied_step < N
    S = row.applied_step
    for trace in (rank0, rank1):
        assert [r["lr"] for r in trace] == [0.01 if r["step"] <= S else pytest.approx(0.001) for r in trace]
    run = store.get_run_by_name("ddp")
    assert run["status"] == "finished" and run["config"]["world_size"] == 2
    assert run["progress"]["world_size"] == 2 and run["progress"]["batch_size"] == 16
    assert len(store.metric_series(run_id, "val_top1_error")) >= 2
