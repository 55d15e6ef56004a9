"""kill -9 and --resume auto: the resumed run is the uninterrupted run, bit for bit in data
order and to 1e-6 in the weights (float32 on the CPU)."""

from __future__ import annotations

import pytest

from trainer.runstore import RunStore
from trainer_helpers import (checkpoint, kill9, last_step, read_trace, rel_diff, run_train, start_train,
                             wait_for)

N = 20  # 15 steps make an epoch of the 120 id_shards images at batch 8
FLAGS = ["--max-steps", str(N), "--no-tencrop", "--checkpoint-minutes", "0"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_the_uninterrupted_run(id_shards, tmp_path):
    straight = start_train(id_shards, tmp_path / "straight", *FLAGS, "--trace", str(tmp_path / "s"),
                           log=tmp_path / "straight.log")
    victim = start_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v1"),
                         log=tmp_path / "victim.log")
    # Mid-epoch 0, with a checkpoint at every step boundary (the kill may land inside one).
    wait_for(lambda: last_step(tmp_path / "v1.rank0") >= 7, what="step 7", proc=victim)
    kill9(victim)
    done = run_train(id_shards, tmp_path / "victim", *FLAGS, "--trace", str(tmp_path / "v2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-2000:]

    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("victim")
    restart = store.events(run["id"], kinds=["restart"])
    assert len(restart) == 1
    resumed_at = restart[0]["payload"]["resumed_from_step"]
    assert 6 <= resumed_at < 15, "the kill should interrupt epoch 0"
    assert run["status"] == "finished" and run["step"] == N

    first, _ = read_trace(tmp_path / "v1.rank0")
    second, _ = read_trace(tmp_path / "v2.rank0")
    reference, _ = read_trace(tmp_path / "s.rank0")
    combined = [r for r in first if r["step"] <= resumed_at] + second
    assert [r["step"] for r in combined] == list(range(1, N + 1))
    # The same samples, in the same order, with the same augmentation, as without the kill.
    assert [(r["labels"], r["fp"]) for r in combined] == [(r["labels"], r["fp"]) for r in reference]
    epoch0 = [label for r in combined if r["epoch"] == 0 for label in r["labels"]]
    assert sorted(epoch0) == list(range(120)), "a sample of the interrupted epoch was seen twice or skipped"

    a, b = checkpoint(tmp_path / "victim"), checkpoint(tmp_path / "straight")
    assert a["step"] == b["step"] == N
    assert rel_diff(a["model"], b["model"]) <= 1e-6
    va = {i: s["velocity"] for i, s in a["optimizer"]["state"].items()}
    vb = {i: s["velocity"] for i, s in b["optimizer"]["state"].items()}
    assert rel_diff(va, vb) <= 1e-6
