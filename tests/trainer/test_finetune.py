"""Section 6's "1 CNN*": a net with the sixth conv layer pre-trained on 10 classes (it trains,
checkpoints, resumes and evaluates), then fine-tuned with `--init-from` on a 5-class corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from trainer_helpers import REPO, checkpoint, env, run_train

from preprocess.cli import main as preprocess_main
from preprocess.contract import class_digest, load_manifest
from preprocess.democorpus import SYNSETS_NAME
from trainer import runstore as rs
from trainer.run.ckptfile import CheckpointError
from trainer.run.config import TrainConfig
from trainer.run.finetune import transfer
from trainer.run.model import build_model

STEPS = ("--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "600", "--init", "kaiming", "--extra-conv")


@pytest.fixture(scope="module")
def pretrained(demo_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pre") / "ten"
    for steps in ("2", "3"):  # the second run resumes the first
        r = run_train(demo_shards, run_dir, "--max-steps", steps, *STEPS)
        assert r.returncode == 0, r.stderr[-2000:]
    return run_dir / "checkpoints" / "last.pt"


def test_extra_conv_run_resumed_and_evaluated_without_flags(pretrained, demo_shards, tmp_path):
    ckpt = checkpoint(pretrained.parent.parent)
    assert ckpt["step"] == 3 and ckpt["config"]["extra_conv"] and "conv6.weight" in ckpt["model"]
    report = tmp_path / "e.json"
    r = subprocess.run([sys.executable, "-m", "trainer", "evaluate", "--checkpoint", str(pretrained), "--device",
                        "cpu", "--backend", "reference", "--num-workers", "1", "--json", str(report)],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(report.read_text())["count"] == 40


@pytest.fixture(scope="module")
def five_classes(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("five")
    for split in ("train", "val"):
        for folder in sorted((demo_corpus / split).iterdir())[:5]:
            shutil.copytree(folder, root / "src" / split / folder.name, copy_function=shutil.os.link)
    shutil.copy(demo_corpus / SYNSETS_NAME, root / "src" / SYNSETS_NAME)
    assert preprocess_main(["shard", "--src", str(root / "src"), "--out", str(root / "shards"), "--workers", "1",
                            "--progress", "off"]) == 0
    return root / "shards"


def _model(data, **fields):
    fields = {"extra_conv": True, **fields}
    return build_model(TrainConfig(data=str(data), run_dir="x", num_classes=5, width=0.0625, **fields))


def test_transfer_copies_features_bit_identically_and_keeps_a_fresh_classifier(pretrained, five_classes):
    source = checkpoint(pretrained.parent.parent)["model"]
    model = _model(five_classes, init="kaiming")
    fresh_fc3 = model.fc3.weight.clone()
    done = transfer(model, pretrained, class_digest(load_manifest(five_classes)["classes"]))
    own = model.state_dict()
    assert all(torch.equal(own[k], source[k]) for k in own if not k.startswith("fc3"))
    assert torch.equal(model.fc3.weight, fresh_fc3) and done.fresh == ["fc3.bias", "fc3.weight"]
    assert "10 classes there, 5 here" in done.line()
    with pytest.raises(CheckpointError, match="differs from this run's beyond the last layer"):
        transfer(_model(five_classes, extra_conv=False), pretrained, "")


def test_fine_tuning_run_records_its_source_and_freezes_features(pretrained, five_classes, tmp_path):
    run_dir = tmp_path / "five"
    r = run_train(five_classes, run_dir, "--init-from", str(pretrained), "--freeze-features", "--max-steps", "3",
                  *STEPS)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--init-from" in r.stdout and "fc3 freshly initialised (10 classes there, 5 here)" in r.stdout
    source, tuned = checkpoint(pretrained.parent.parent), checkpoint(run_dir)
    assert tuned["step"] == 3 and tuned["lr_history"][0]["reason"] == "initial"
    assert all(torch.equal(tuned["model"][k], source["model"][k]) for k in tuned["model"] if k.startswith("conv"))
    assert not torch.equal(tuned["model"]["fc1.weight"], source["model"]["fc1.weight"])  # the classifier learns
    store = rs.RunStore(run_dir.parent / "runs.db")
    try:
        run = store.get_run_by_name("five")
        assert run["config"]["init_from"] == str(pretrained) and run["config"]["freeze_features"] is True
        (event,) = store.events(run["id"], kinds=["init_from"])
        assert event["payload"]["fresh"] == ["fc3.bias", "fc3.weight"]
    finally:
        store.close()


def test_init_from_a_file_that_is_not_a_checkpoint_is_one_line(five_classes, tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    r = run_train(five_classes, tmp_path / "run", "--init-from", str(bogus), "--max-steps", "1", *STEPS)
    assert r.returncode == 4 and str(bogus) in r.stderr and "Traceback" not in r.stderr


def test_freeze_features_without_init_from_is_refused(five_classes, tmp_path):
    r = run_train(five_classes, tmp_path / "run", "--freeze-features", "--max-steps", "1", *STEPS)
    assert r.returncode == 2 and "give --init-from" in r.stderr and len(r.stderr.strip().splitlines()) == 1
