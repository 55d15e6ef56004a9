"""Issue 13, the checkpoint rows: a pickle that would run code (row 3), temporaries of dead
writers (row 2), another class list under the same count (row 5), one weight changed in
last.pt (row 7), a full disk while a checkpoint is written (row 10).

The trainer runs in-process (`trainer.cli.main`), as a user's command would, on the session's
demo shards; one short run is shared by the tests that need a run dir.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from common import exitcodes
from preprocess.contract import class_digest, load_manifest
from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import CheckpointError, load_checkpoint, pack
from trainer.cli import main
from trainer.run.config import TrainConfig
from trainer.run.model import build_model
from trainer.runstore import RunStore

from tests.evaluate.helpers import write_checkpoint
from tests.trainer.trainer_helpers import TINY

QUIET = ["--val-every", "0", "--no-tencrop"]
STEP_16 = ["--epochs", "2", "--max-steps", "16"]  # the demo shards' first epoch is 15 steps


def _train(data, run_dir, *flags) -> int:
    return main(["train", "--data", str(data), "--run-dir", str(run_dir), *TINY, *QUIET, *flags])


def _one_line(capsys) -> str:
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def trained(demo_shards, tmp_path_factory):
    """A run dir after one epoch and a step (epoch-001.pt at step 15, last.pt at step 16),
    started over two planted temporaries: one of a dead writer, one of a live one."""
    root = tmp_path_factory.mktemp("ckfaults")
    ckdir = root / "run" / "checkpoints"
    ckdir.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead_tmp, live_tmp = ckdir / f".last.pt.tmp{_dead_pid()}", ckdir / f".epoch-001.pt.tmp{live.pid}"
    dead_tmp.write_bytes(b"half a checkpoint")
    live_tmp.write_bytes(b"being written")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert _train(demo_shards, root / "run", *STEP_16) == 0
    finally:
        live.kill()
        live.wait()
    return {"root": root, "dead": dead_tmp, "live": live_tmp, "stdout": out.getvalue()}


def _copy_run(trained, tmp_path):
    """A copy of the trained run and its run store (the planted temporaries left out)."""
    root = tmp_path / "copy"
    shutil.copytree(trained["root"], root, ignore=shutil.ignore_patterns("*.tmp*"))
    return root / "run"


def _change_one_weight(path, tensor="conv1.weight") -> None:
    """Overwrite one float of `tensor` in the file, as a bad disk or a careless edit would."""
    weights = torch.load(path, weights_only=True)["model"][tensor].reshape(-1)
    data = bytearray(path.read_bytes())
    at = data.find(weights[:4].numpy().tobytes())  # the tensor's bytes are stored as they are
    assert at > 0
    data[at : at + 4] = torch.tensor([weights[0].item() + 0.5]).numpy().tobytes()
    path.write_bytes(bytes(data))


def _shuffled_shards(demo_shards, tmp_path):
    """The shards with two class folders' names swapped: same count, every label of those
    two classes now means the other class."""
    data = tmp_path / "shards"
    shutil.copytree(demo_shards, data)
    manifest = json.loads((data / "dataset.json").read_text())
    a, b = manifest["classes"][0], manifest["classes"][1]
    (a["wnid"], a["name"]), (b["wnid"], b["name"]) = (b["wnid"], b["name"]), (a["wnid"], a["name"])
    manifest["class_digest"] = class_digest(manifest["classes"])  # a whole dataset.json, of other classes
    (data / "dataset.json").write_text(json.dumps(manifest))
    return data


def _checkpoint_for(data, path):
    config = TrainConfig(data=str(data), run_dir=str(path.parent), num_classes=10, width=0.0625).to_dict()
    torch.manual_seed(0)
    return write_checkpoint(path, build_model(config), config)


# -- row 2: temporaries of dead writers ----------------------------------------------------
def test_trainer_sweeps_dead_writers_temporaries_and_keeps_a_live_ones(trained):
    assert not trained["dead"].exists(), "a dead writer's temporary must be swept"
    assert trained["live"].exists(), "a live writer's temporary must never be removed"
    assert f"removed {trained['dead'].name}" in trained["stdout"]


# -- row 3: a checkpoint that would run code ------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling with weights_only=False calls open(marker, "w")
        return (open, (self.marker, "w"))


def test_evaluate_of_a_pickle_that_runs_code_runs_nothing(demo_shards, tmp_path, capsys):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"version": 2, "model": _Payload(marker), "config": {}}, evil)
    assert main(["evaluate", "--checkpoint", str(evil), "--data", str(demo_shards)]) == exitcodes.CORRUPT
    line = _one_line(capsys)
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert str(evil) in line and "not loaded" in line


# -- row 7: one weight changed in last.pt ----------------------------------------------------
def test_one_changed_weight_is_caught_by_evaluate_and_predict(demo_shards, tmp_path, capsys):
    path = _checkpoint_for(demo_shards, tmp_path / "last.pt")
    _change_one_weight(path)
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(demo_shards)]) == exitcodes.CORRUPT
    line = _one_line(capsys)
    assert str(path) in line and "conv1.weight does not match the checksum" in line
    assert main(["predict", "--checkpoint", str(path), "--data", str(demo_shards), "x.jpg"]) == exitcodes.CORRUPT
    assert "conv1.weight" in _one_line(capsys)


def test_resume_passes_over_a_damaged_last_pt_to_the_newest_good_one(trained, demo_shards, tmp_path, capsys):
    run_dir = _copy_run(trained, tmp_path)
    ckdir = run_dir / "checkpoints"
    _change_one_weight(ckdir / "last.pt")
    assert _train(demo_shards, run_dir, *STEP_16) == 0
    out = capsys.readouterr().out
    assert f"passing over {ckdir / 'last.pt'}" in out and "conv1.weight does not match" in out
    assert f"resumed from {ckdir / 'epoch-001.pt'} at step 15" in out
    store = RunStore(run_dir.parent / "runs.db")
    try:
        (event,) = store.events(store.get_run_by_name("run")["id"], kinds=["checkpoint_fallback"])
    finally:
        store.close()
    assert [s["path"] for s in event["payload"]["skipped"]] == [str(ckdir / "last.pt")]
    assert event["payload"]["resumed_from"] == str(ckdir / "epoch-001.pt")
    assert load_checkpoint(ckdir / "last.pt")["step"] == 16  # a good last.pt again


def test_a_damaged_epoch_end_last_pt_is_passed_over_with_its_hard_link(tmp_path):
    """At an epoch end last.pt is a hard link to epoch-NNN.pt: one damage, two names."""
    ckdir = CheckpointDir(tmp_path, keep=3)
    for epoch in (1, 2):
        ckdir.save(pack(model={"w": torch.full((4,), float(epoch))}, optimizer={}, policy={}, lr=0.01,
                        lr_history=[], epoch=epoch, epoch_step=0, step=epoch, rng=[], data_state=[], config={},
                        applied_commands=[], class_digest="0" * 64), epoch_end=epoch)
    data = bytearray(ckdir.last.read_bytes())
    at = data.find(torch.full((4,), 2.0).numpy().tobytes())
    data[at] ^= 1
    with open(ckdir.last, "r+b") as f:  # in place: the epoch file's bytes change too
        f.write(data)
    record, path, skipped = ckdir.load_latest()
    assert path == ckdir.epoch_path(1) and record["epoch"] == 1
    assert [p for p, _ in skipped] == [str(ckdir.last), str(ckdir.epoch_path(2))]
    assert skipped[1][1] == "the same file as last.pt"


# -- row 5: another class list under the same class count -----------------------------------
def test_resume_refuses_another_class_list_unless_asked(trained, demo_shards, tmp_path, capsys):
    run_dir, shuffled = _copy_run(trained, tmp_path), _shuffled_shards(demo_shards, tmp_path)
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    assert _train(shuffled, run_dir, *STEP_16) == exitcodes.USAGE
    line = _one_line(capsys)
    assert str(shuffled / "dataset.json") in line and str(run_dir / "checkpoints" / "last.pt") in line
    assert str(demo_shards / "dataset.json") in line and "--allow-class-change" in line
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert _train(shuffled, run_dir, *STEP_16, "--allow-class-change") == 0
    assert "--allow-class-change: " in capsys.readouterr().out
    new = load_checkpoint(run_dir / "checkpoints" / "last.pt")["class_digest"]
    assert new == class_digest(load_manifest(shuffled)["classes"])


def test_evaluate_predict_neighbors_refuse_another_class_list(demo_shards, tmp_path, capsys):
    shuffled = _shuffled_shards(demo_shards, tmp_path)
    path = _checkpoint_for(demo_shards, tmp_path / "last.pt")
    for argv in (["evaluate"], ["predict", "x.jpg"], ["neighbors", "x.jpg"]):
        assert main([argv[0], "--checkpoint", str(path), "--data", str(shuffled), *argv[1:]]) == exitcodes.USAGE
        line = _one_line(capsys)
        assert str(shuffled / "dataset.json") in line and str(demo_shards / "dataset.json") in line, line


def test_a_checkpoint_without_a_class_digest_gets_a_warning(demo_shards, demo_corpus, tmp_path, capsys):
    path = _checkpoint_for(demo_shards, tmp_path / "old.pt")
    record = torch.load(path, weights_only=True)
    del record["class_digest"], record["checksums"]
    record["version"] = 1  # the format before the digest
    record["rng"] = [{"numpy": np.random.get_state()}]  # and its numpy RNG state, an ndarray
    torch.save(record, path)
    image = next((demo_corpus / "train").rglob("*.JPEG"))
    assert main(["predict", "--checkpoint", str(path), "--data", str(demo_shards), str(image)]) == 0
    err = capsys.readouterr().err
    assert "records no class list" in err and "format 1" in err


def test_unknown_format_version_is_one_line(demo_shards, tmp_path):
    path = _checkpoint_for(demo_shards, tmp_path / "new.pt")
    record = torch.load(path, weights_only=True)
    record["version"] = 99
    torch.save(record, path)
    with pytest.raises(CheckpointError, match=r"new\.pt has checkpoint format 99, newer than this trainer reads"):
        load_checkpoint(path)


# -- row 10: a full disk while a checkpoint is written -------------------------------------
def test_full_disk_during_a_checkpoint_write(demo_shards, small_disk, tmp_path, capsys):
    run_dir = small_disk(256) / "run"  # room for the run dir, not for a 1.8 MB checkpoint
    argv = ["--runs-db", str(tmp_path / "runs.db"), "--max-steps", "1"]
    assert _train(demo_shards, run_dir, *argv) == exitcodes.NO_SPACE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left" in err and str(run_dir / "checkpoints") in err and "--resume auto" in err
    assert os.listdir(run_dir / "checkpoints") == [], "the checkpoint's temporary must be removed"
    store = RunStore(tmp_path / "runs.db")
    try:
        assert store.get_run_by_name("run")["status"] == "failed"
    finally:
        store.close()
