"""Fall 2011's class count (21,841): 20,000 class folders through preprocess, train, evaluate, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from trainer_helpers import REPO, TINY, env

CLASSES = 20_000
VAL_CLASSES = 16  # evaluate's cost is per image; the classifier's width is what is under test


def _corpus(root):
    rng = np.random.default_rng(0)
    bases = []
    for i in range(64):
        bases.append(root / f"base-{i}.JPEG")
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(bases[-1], quality=90)
    for c in range(CLASSES):
        for split in ("train", "val") if c < VAL_CLASSES else ("train",):
            folder = root / "src" / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            os.link(bases[c % 64], folder / f"{split}_{c}.JPEG")
    return root / "src"


def _run(*args, timeout=300):
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_twenty_thousand_classes_preprocess_train_evaluate_predict(tmp_path):
    src, shards, run = _corpus(tmp_path), tmp_path / "shards", tmp_path / "run"
    _run("preprocess.cli", "shard", "--src", str(src), "--out", str(shards), "--workers", "2",
         "--shard-max-count", "5000", "--progress", "off")
    manifest = json.loads((shards / "dataset.json").read_text())
    assert len(manifest["classes"]) == CLASSES and manifest["splits"]["train"]["count"] == CLASSES
    _run("trainer", "train", "--data", str(shards), "--run-dir", str(run), *TINY, "--max-steps", "2",
         "--val-every", "0", "--no-tencrop", "--checkpoint-minutes", "600")
    report = tmp_path / "evaluation.json"
    out = _run("trainer", "evaluate", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data",
               str(shards), "--device", "cpu", "--backend", "reference", "--num-workers", "1",
               "--json", str(report)).stdout
    model = json.loads(report.read_text())["models"][0]
    assert 0.0 <= model["center"]["top5_error"] <= 1.0 and "Top-1" in out
    probe = src / "val" / "n00000003" / "val_3.JPEG"
    lines = json.loads(_run("trainer", "predict", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                            "--data", str(shards), "--device", "cpu", "--json", str(probe)).stdout.splitlines()[0])
    assert len(lines["top5"]) == 5 and all(p["class"].startswith("n") for p in lines["top5"])
