"""`trainer train` end to end on the demo shards: what the run store, the checkpoints and
the terminal get; SIGTERM; a diverging loss; bad input in one line."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from trainer import runstore as rs
from trainer.cli import main
from trainer.runstore import RunStore
from trainer_helpers import checkpoint, finite, last_step, run_train, start_train, wait_for

INTERVAL = [rs.LOSS, rs.LR, rs.IMAGES_PER_SEC, rs.DATA_WAIT, rs.EPOCH, rs.IMAGES_SEEN]
PROGRESS = ["epochs", "steps_per_epoch", "images_per_sec", "data_wait_frac", "eta_s", "images_seen",
            "batch_size", "world_size", "demo"]


@pytest.mark.slow
def test_two_epochs_write_the_run_store_checkpoints_and_evaluations(demo_shards, tmp_path):
    done = run_train(demo_shards, tmp_path / "e2e", "--epochs", "2", "--keep-checkpoints", "1", "--demo")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished at step 30" in done.stdout
    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("e2e")
    rid = run["id"]
    assert run["status"] == "finished" and run["step"] == 30 and run["epoch"] == 2
    assert run["config"]["run_dir"] == str(tmp_path / "e2e") and run["config"]["num_classes"] == 10
    assert set(PROGRESS) <= set(run["progress"]) and run["progress"]["demo"] is True
    names = store.metric_names(rid)
    assert set(INTERVAL + [rs.VAL_TOP1, rs.VAL_TOP5, rs.VAL10_TOP1, rs.VAL10_TOP5]) <= set(names)
    assert [r["step"] for r in store.metric_series(rid, rs.VAL_TOP1)] == [15, 30]
    assert [r["step"] for r in store.metric_series(rid, rs.LOSS)] == list(range(2, 31, 2))
    assert all(0 <= r["value"] <= 1 for r in store.metric_series(rid, rs.VAL10_TOP5))
    kinds = [e["kind"] for e in store.events(rid)]
    assert kinds.count("checkpoint") == 2 and kinds.count("evaluation") == 3
    files = sorted(p.name for p in (tmp_path / "e2e" / "checkpoints").iterdir())
    assert files == ["epoch-002.pt", "last.pt"]  # --keep-checkpoints 1
    ckpt = checkpoint(tmp_path / "e2e")
    assert (ckpt["step"], ckpt["epoch"], ckpt["epoch_step"], ckpt["lr"]) == (30, 2, 0, 0.01)
    assert ckpt["config"]["width"] == 0.0625 and len(ckpt["rng"]) == 1
    assert (tmp_path / "e2e" / "filters.png").is_file()


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_exits_0(demo_shards, tmp_path):
    proc = start_train(demo_shards, tmp_path / "t", "--epochs", "5", "--checkpoint-minutes", "60",
                       "--trace", str(tmp_path / "tr"), log=tmp_path / "t.log")
    wait_for(lambda: last_step(tmp_path / "tr.rank0") >= 3, what="step 3", proc=proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    out = (tmp_path / "t.log").read_text()
    assert "stopped by SIGTERM at step" in out and "Traceback" not in out
    ckpt = checkpoint(tmp_path / "t")
    assert ckpt["step"] == last_step(tmp_path / "tr.rank0") and ckpt["epoch_step"] == ckpt["step"]
    assert RunStore(tmp_path / "runs.db").get_run_by_name("t")["status"] == "stopped"


@pytest.mark.slow
def test_a_diverging_loss_stops_with_an_event_and_keeps_the_last_good_checkpoint(demo_shards, tmp_path):
    done = run_train(demo_shards, tmp_path / "nan", "--lr", "1e6", "--max-steps", "12", "--val-every", "0",
                     "--no-tencrop", "--checkpoint-minutes", "0")
    assert done.returncode == 1
    assert "stopped; the last good checkpoint is" in done.stdout
    store = RunStore(tmp_path / "runs.db")
    run = store.get_run_by_name("nan")
    assert run["status"] == "failed"
    (event,) = store.events(run["id"], kinds=["nan_loss"])
    ckpt = checkpoint(tmp_path / "nan")
    assert ckpt["step"] < event["step"] and finite(ckpt["model"])


def _fails_in_one_line(capsys, argv) -> str:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line(demo_shards, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = ["--run-dir", str(tmp_path / "r")]
    assert "dataset.json" in _fails_in_one_line(capsys, ["--data", str(empty), *run])
    no_shards = tmp_path / "no_shards"
    no_shards.mkdir()
    shutil.copy(demo_shards / "dataset.json", no_shards)
    assert "no train shards" in _fails_in_one_line(capsys, ["--data", str(no_shards), *run])
    err = _fails_in_one_line(capsys, ["--data", str(demo_shards), "--num-classes", "1000", *run])
    assert "--num-classes 1000" in err and "10 classes" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _fails_in_one_line(capsys, ["--data", str(demo_shards), "--run-dir", str(blocker / "run")])
    assert "cannot write to the run dir" in err


def test_unknown_config_keys_fail():
    from trainer.run.config import TrainConfig

    with pytest.raises(ValueError, match="unknown config keys: lr_schedule"):
        TrainConfig.from_dict({"data": "d", "run_dir": "r", "lr_schedule": "cosine"})
    assert TrainConfig.from_dict(TrainConfig("d", "r").to_dict()) == TrainConfig("d", "r")
    paper = TrainConfig("d", "r")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay, paper.epochs) == (128, 0.01, 0.9, 5e-4, 90)
