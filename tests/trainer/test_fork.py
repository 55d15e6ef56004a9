"""`trainer train --fork-from`: a fork at epoch 2 of a 4-epoch run continues the parent's
trajectory bit for bit when no flag changes, and differs only in LR when --lr is given;
what a fork refuses, in one line each."""

from __future__ import annotations

import shutil

import pytest

from trainer.runstore import RunStore
from trainer_helpers import read_trace, run_train, start_train, wait_for

FLAGS = ["--epochs", "4", "--no-tencrop", "--seed", "3"]
SPE = 15  # 120 demo train images at batch 8


@pytest.fixture(scope="module")
def parent(demo_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("fork")
    done = run_train(demo_shards, root / "parent", *FLAGS, "--trace", str(root / "p"))
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def steps(prefix):
    records, final = read_trace(prefix.with_name(prefix.name + ".rank0"))
    return records, final


@pytest.mark.slow
def test_fork_continues_the_parent_bit_for_bit(demo_shards, parent):
    done = run_train(demo_shards, parent / "same", "--fork-from", str(parent / "parent") + "@epoch-002",
                     "--trace", str(parent / "f"))
    assert done.returncode == 0, done.stderr[-2000:]
    ours, our_final = steps(parent / "f")
    theirs, their_final = steps(parent / "p")
    assert ours[0]["step"] == 2 * SPE + 1
    assert ours == [r for r in theirs if r["step"] > 2 * SPE]  # data, augmentation and LR of every step
    assert our_final == their_final  # weights after the last step, bit for bit

    store = RunStore(parent / "runs.db")
    fork, par = store.get_run_by_name("same"), store.get_run_by_name("parent")
    assert (fork["parent_id"], fork["forked_at_step"]) == (par["id"], 2 * SPE)
    assert fork["status"] == "finished" and fork["step"] == 4 * SPE
    assert [e["kind"] for e in store.events(fork["id"], kinds=["fork", "restart"])] == ["fork"]
    assert fork["config"]["epochs"] == 4 and fork["config"]["seed"] == 3  # the parent's flags
    assert par["parent_id"] is None and store.events(par["id"], kinds=["fork"]) == []

    # --resume auto (the default) of that same fork continues it, not the parent, even once
    # the parent's checkpoint has been rotated away.
    forked_from = parent / "parent" / "checkpoints" / "epoch-002.pt"
    forked_from.rename(forked_from.with_suffix(".away"))
    try:
        again = run_train(demo_shards, parent / "same", "--fork-from", str(parent / "parent") + "@epoch-002")
    finally:
        forked_from.with_suffix(".away").rename(forked_from)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout and str(parent / "same") in again.stdout
    assert RunStore(parent / "runs.db").get_run_by_name("same")["id"] == fork["id"]


@pytest.mark.slow
def test_fork_with_lr_differs_only_in_lr(demo_shards, parent):
    done = run_train(demo_shards, parent / "lower", "--fork-from", str(parent / "parent") + "@epoch-002",
                     "--lr", "0.002", "--max-steps", str(2 * SPE + 3), "--trace", str(parent / "l"))
    assert done.returncode == 0, done.stderr[-2000:]
    ours, our_final = steps(parent / "l")
    theirs, their_final = steps(parent / "p")
    theirs = [r for r in theirs if 2 * SPE < r["step"] <= 2 * SPE + 3]
    assert [r["lr"] for r in ours] == [0.002] * 3 and {r["lr"] for r in theirs} == {0.01}
    strip = lambda rs: [{k: v for k, v in r.items() if k != "lr"} for r in rs]  # noqa: E731
    assert strip(ours) == strip(theirs)
    assert our_final != their_final


@pytest.mark.slow
def test_fork_refusals_are_one_line(demo_shards, parent):
    src = str(parent / "parent")
    missing = run_train(demo_shards, parent / "x1", "--fork-from", src + "@epoch-001")
    assert missing.returncode == 2
    line = missing.stderr.strip().splitlines()[-1]
    assert "no checkpoint of epoch 1" in line and "epoch-002, epoch-003, epoch-004, last.pt" in line

    shape = run_train(demo_shards, parent / "x2", "--fork-from", src, "--width", "0.125")
    assert shape.returncode == 2 and "--init-from" in shape.stderr and "--width 0.0625 -> 0.125" in shape.stderr

    both = run_train(demo_shards, parent / "x3", "--fork-from", src, "--init-from", src + "/checkpoints/last.pt")
    assert both.returncode == 2 and "give one of them" in both.stderr

    own = run_train(demo_shards, parent / "parent", "--fork-from", src)
    assert own.returncode == 2 and "parent's own run dir" in own.stderr

    # By name, from the run store; into a run dir that another run's checkpoints fill.
    shutil.copytree(parent / "parent" / "checkpoints", parent / "copy" / "checkpoints")
    taken = run_train(demo_shards, parent / "copy", "--fork-from", "parent")
    assert taken.returncode == 2 and "already holds checkpoints of another run" in taken.stderr
    store = RunStore(parent / "runs.db")
    assert all(store.get_run_by_name(n) is None for n in ("x1", "x2", "x3", "copy"))


@pytest.mark.slow
def test_forking_a_run_that_is_training(demo_shards, tmp_path):
    live = start_train(demo_shards, tmp_path / "live", *FLAGS, "--step-delay", "0.3", log=tmp_path / "live.log")
    try:
        first = tmp_path / "live" / "checkpoints" / "epoch-001.pt"
        wait_for(first.is_file, timeout=180, what="the first epoch checkpoint", proc=live)
        done = run_train(demo_shards, tmp_path / "branch", "--fork-from", str(tmp_path / "live") + "@epoch-001",
                         "--max-steps", str(SPE + 2))
        assert done.returncode == 0, done.stderr[-2000:]
        assert live.poll() is None, "the parent must go on training"
        store = RunStore(tmp_path / "runs.db")
        branch, par = store.get_run_by_name("branch"), store.get_run_by_name("live")
        assert (branch["parent_id"], branch["forked_at_step"], branch["step"]) == (par["id"], SPE, SPE + 2)
        assert par["status"] == "running" and par["parent_id"] is None
    finally:
        live.terminate()
        live.wait(timeout=120)
