"""Issue 13, rows 5-7 and 11 (data side): damaged prepared data is named in one line with
exit 4, a label outside the classes is a reported damaged sample, and the manifest
carries the identity of its class list.

Each test copies the session's `demo_shards` (10 classes, 4 train + 2 val shards) and
damages the copy; the readers are the real ones (`preprocess verify`, `trainer train`,
`trainer evaluate`, both loaders)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from common import exitcodes
from pipeline import make_loader
from pipeline.base import DAMAGED as LOADER_DAMAGED
from preprocess.cli import main as preprocess_main
from preprocess.contract import (
    CorruptError, class_digest, load_manifest, load_stats,
)
from tests.pipeline.synthetic_shards import relabel
from trainer.cli import main as trainer_main

TINY = ["--width", "0.0625", "--batch-size", "8", "--num-workers", "1", "--device", "cpu",
        "--backend", "reference", "--epochs", "1"]


@pytest.fixture
def shards(demo_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(demo_shards, out, ignore=shutil.ignore_patterns(".preprocess"))
    return out


def _nan_mean_image(data):
    with np.load(data / "stats.npz") as z:
        fields = dict(z)
    fields["mean_image"][10, 20, 1] = np.nan
    with open(data / "stats.npz", "wb") as f:  # as a damaged file would be: not through DatasetStats
        np.savez(f, **fields)


def _evaluate_checkpoint(data, tmp_path):
    from tests.evaluate.helpers import write_checkpoint
    from trainer.run.config import TrainConfig
    from trainer.run.model import build_model

    config = TrainConfig(data=str(data), run_dir=str(tmp_path / "run"), num_classes=10, width=0.125).to_dict()
    return write_checkpoint(tmp_path / "model.pt", build_model(config), config)


def _one_line(text: str, *words: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) == 1, text
    assert all(w in lines[0] for w in words), lines[0]


def test_nan_in_the_mean_image_is_refused_by_verify_train_evaluate_and_predict(shards, tmp_path, capsys):
    _nan_mean_image(shards)
    with pytest.raises(CorruptError, match="mean_image"):
        load_stats(shards)
    assert preprocess_main(["verify", str(shards)]) == exitcodes.CORRUPT
    assert "stats.npz" in capsys.readouterr().err
    rc = trainer_main(["train", "--data", str(shards), "--run-dir", str(tmp_path / "r"), *TINY])
    assert rc == exitcodes.CORRUPT
    _one_line(capsys.readouterr().err, "stats.npz", "NaN", "preprocess shard")
    ckpt = str(_evaluate_checkpoint(shards, tmp_path))
    rc = trainer_main(["evaluate", "--checkpoint", ckpt, "--data", str(shards), "--device", "cpu",
                       "--backend", "reference", "--num-workers", "1", "--batch-size", "8"])
    assert rc == exitcodes.CORRUPT
    _one_line(capsys.readouterr().out, "stats.npz", "NaN")
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 280), (90, 120, 30)).save(image)
    assert trainer_main(["predict", "--checkpoint", ckpt, "--data", str(shards), "--device", "cpu",
                         str(image)]) == exitcodes.CORRUPT
    _one_line(capsys.readouterr().out, "stats.npz", "NaN")


def _damage(shards, name: str) -> None:
    if name == "dataset.json":
        (shards / name).write_text('{"format_version": 1, "classes": [')  # torn mid-write by another tool
    elif name == "stats.npz":
        data = (shards / name).read_bytes()
        (shards / name).write_bytes(data[: len(data) // 2])
    else:
        lines = (shards / name).read_text().splitlines()
        lines[2] = lines[2].replace(lines[2].split()[1], "12x4", 1)  # a non-numeric offset
        (shards / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["dataset.json", "stats.npz", "train-000001.idx"])
def test_a_damaged_contract_file_is_one_line_and_exit_4(shards, tmp_path, capsys, name):
    _damage(shards, name)
    assert preprocess_main(["verify", str(shards)]) == exitcodes.CORRUPT
    assert name in capsys.readouterr().err
    rc = trainer_main(["train", "--data", str(shards), "--run-dir", str(tmp_path / "r"), *TINY])
    assert rc == exitcodes.CORRUPT
    _one_line(capsys.readouterr().err, name, "preprocess")
    if name.endswith(".idx"):  # DALI reads whole index files itself: its build must not be what finds it
        with pytest.raises(CorruptError, match=name):
            next(iter(make_loader(shards, batch_size=8, backend="dali", num_workers=1)))


def test_the_manifest_carries_its_class_digest_and_readers_check_it(shards, capsys):
    manifest = load_manifest(shards)
    assert manifest["class_digest"] == class_digest(manifest["classes"])
    assert manifest["params"]["seed"] == 0 and len(manifest["source_digest"]) == 64
    manifest["classes"][3]["wnid"], manifest["classes"][4]["wnid"] = (manifest["classes"][4]["wnid"],
                                                                      manifest["classes"][3]["wnid"])
    (shards / "dataset.json").write_text(json.dumps(manifest))  # edited by hand: labels now mean other classes
    with pytest.raises(CorruptError, match="class_digest"):
        load_manifest(shards)
    assert preprocess_main(["verify", str(shards)]) == exitcodes.CORRUPT
    assert "class_digest" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_a_label_outside_the_classes_is_a_reported_damaged_sample(shards, backend, caplog):
    key = relabel(shards / "train-000002.tar", 5, b"99")  # 10 classes: 99 would index past the last
    caplog.set_level(logging.WARNING)
    loader = make_loader(shards, batch_size=16, backend=backend, num_workers=1)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == loader.num_samples  # the row is masked, the batch keeps its shape
    assert int((labels == LOADER_DAMAGED).sum()) == 1 and int(labels.max()) < 10
    assert loader.skipped == [f"train-000002.tar:{key}"]
    assert key in caplog.text and "not a class number" in caplog.text
    val = make_loader(shards, split="val", mode="center", batch_size=8, backend=backend, num_workers=1)
    assert sum(int(v.sum()) for _, _, v in val) == load_manifest(shards)["splits"]["val"]["count"]


def test_a_flipped_byte_in_a_stored_jpeg_is_reported_by_verify(shards, capsys):
    """A bit flipped in a JPEG's entropy data usually decodes without error in Pillow and in
    DALI (45 of 60 random flips, measured): the shard's sha256 in the manifest catches it."""
    tar = shards / "train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[5 * 1024 + 300] ^= 0x10  # inside the first sample's JPEG
    tar.write_bytes(bytes(data))
    assert preprocess_main(["verify", str(shards)]) == exitcodes.FAILED
    err = capsys.readouterr().err
    assert "train-000001.tar: size or sha256 differs" in err and "preprocess shard" in err
