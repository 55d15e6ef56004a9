"""docker compose stops the trainer service with SIGINT to torchrun (its stop_signal): both
ranks stop at the same step boundary and rank 0 writes one checkpoint holding both ranks'
RNG states and data positions (what `--resume auto` continues from)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from trainer.runstore import RunStore
from trainer_helpers import REPO, TINY, checkpoint, env, last_step, read_trace, wait_for


@pytest.mark.slow
def test_sigint_to_torchrun_checkpoints_both_ranks_at_one_step(id_shards, tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--log-dir", str(tmp_path / "elastic"), "-m", "trainer", "train", "--data", str(id_shards), "--run-dir", str(tmp_path / "ddp"), *TINY,
            "--batch-size", "16", "--epochs", "100", "--val-every", "0", "--no-tencrop",
            "--checkpoint-minutes", "60", "--step-delay", "0.2", "--trace", str(tmp_path / "t")]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: last_step(tmp_path / "t.rank1") >= 3, what="step 3", proc=proc)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped by SIGINT at step" in text, text[-3000:]
    rank0, _ = read_trace(tmp_path / "t.rank0")
    rank1, _ = read_trace(tmp_path / "t.rank1")
    stop = rank0[-1]["step"]
    assert rank1[-1]["step"] == stop, "the ranks stopped at different steps"
    ckpt = checkpoint(tmp_path / "ddp")
    in_epoch = stop % 7  # 120 images over 2 ranks at 8 each: 7 steps an epoch
    assert ckpt["step"] == stop and ckpt["epoch_step"] == in_epoch
    assert len(ckpt["rng"]) == 2 and len(ckpt["data_state"]) == 2
    if in_epoch:  # mid-epoch: each rank's own data position
        assert [(d["rank"], d["batch"]) for d in ckpt["data_state"]] == [(0, in_epoch), (1, in_epoch)]
    run = RunStore(tmp_path / "runs.db").get_run_by_name("ddp")
    assert run["status"] == "stopped" and run["step"] == stop
    print(f"torchrun exit status after SIGINT: {rc}")
