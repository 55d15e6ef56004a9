"""`trainer evaluate`: exact counts over the split, ten-crop and center, ensembles, bad input."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.augment import TEN_CROPS, mean_array, ten_crop_image
from preprocess.contract import Manifest, load_stats
from tests.evaluate.helpers import CLASSES, VAL_PER_CLASS
from trainer.cli import main as trainer_main
from trainer.analysis.inference import decode_stored, load_model, make_eval_loader
from trainer.run.distributed import World
from trainer.run.validation import CENTER_PATCH, VIEWS, count_errors, tally

REPO = Path(__file__).resolve().parents[2]


def _val_images(data: Path) -> tuple[list[np.ndarray], list[int]]:
    images, labels = [], []
    for shard in sorted(data.glob("val-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar}
            for name in sorted(n for n in members if n.endswith(".jpg")):
                images.append(decode_stored(tar.extractfile(members[name]).read()))
                labels.append(int(tar.extractfile(members[name[:-4] + ".cls"]).read()))
    return images, labels


def _observed(loader, seen_labels: list):
    """Pass the loader's batches on, noting the label of every row that counts."""
    for images, labels, valid in loader:
        seen_labels.extend(labels[valid.bool()].tolist())
        yield images, labels, valid


@pytest.mark.parametrize("world", [1, 2])
def test_every_val_image_is_counted_exactly_once(tiny_shards, trained_checkpoint, world):
    model, config = load_model(trained_checkpoint)
    total, seen_labels, seen = torch.zeros(1, 2, 2, dtype=torch.float64), [], 0
    for rank in range(world):  # each rank's share, as under DDP, summed as all_reduce sums
        # 2 a rank over 9 images: the last batch of a rank is padded, and the padding must not count.
        flags = argparse.Namespace(batch_size=2 * world, backend="reference", num_workers=1)
        loader = make_eval_loader(tiny_shards, "val", World(rank=rank, world_size=world), flags, config,
                                  Manifest.read(tiny_shards))
        assert loader.cfg.batch_size == 2
        counts, n = tally([model], _observed(loader, seen_labels), torch.device("cpu"))
        total, seen = total + counts, seen + n
    assert seen == len(seen_labels) == CLASSES * VAL_PER_CLASS
    assert sorted(seen_labels) == sorted(list(range(CLASSES)) * VAL_PER_CLASS)

    # The same errors, image by image, from the ten patches computed here.
    images, labels = _val_images(tiny_shards)
    mean = mean_array(load_stats(tiny_shards), "image")
    x = torch.from_numpy(np.stack([ten_crop_image(im, mean) for im in images])).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        probs = model(x.flatten(0, 1)).softmax(1).view(len(images), 10, -1)
    y, valid = torch.tensor(labels), torch.ones(len(labels), dtype=torch.bool)
    center_index = TEN_CROPS.index((16, 16, False))
    assert CENTER_PATCH == center_index  # the center view evaluate counts
    assert torch.equal(total[0, VIEWS.index("tencrop")], count_errors(probs.mean(1), y, valid))
    assert torch.equal(total[0, VIEWS.index("center")], count_errors(probs[:, center_index], y, valid))


def test_ensemble_averages_softmax_not_logits():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    models = [torch.nn.Sequential(torch.nn.Flatten(), m) for m in (a, b)]
    images = torch.randn(64, 10, 1, 2, 2)
    labels = torch.randint(0, 3, (64,))
    valid = torch.ones(64, dtype=torch.bool)
    counts, n = tally(models, [(images, labels, valid)], torch.device("cpu"))
    with torch.no_grad():
        p = [m(images.flatten(0, 1)).softmax(1).view(64, 10, 3) for m in models]
    ensemble = (p[0].mean(1) + p[1].mean(1)) / 2
    assert n == 64
    assert torch.equal(counts[2, VIEWS.index("tencrop")], count_errors(ensemble, labels, valid))
    assert torch.equal(counts[0, VIEWS.index("center")], count_errors(p[0][:, 4], labels, valid))


def _hand_top1_errors(models, data: Path) -> dict[str, float]:
    """Top-1 error of the softmax averaged over `models`, per view, from patches made here."""
    images, labels = _val_images(data)
    mean = mean_array(load_stats(data), "image")
    x = torch.from_numpy(np.stack([ten_crop_image(im, mean) for im in images])).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        probs = sum(m(x.flatten(0, 1)).softmax(1).view(len(images), 10, -1) for m in models) / len(models)
    center = TEN_CROPS.index((16, 16, False))
    y = torch.tensor(labels)
    return {"tencrop": float((probs.mean(1).argmax(1) != y).double().mean()),
            "center": float((probs[:, center].argmax(1) != y).double().mean())}


def test_ensemble_of_two_different_checkpoints_is_their_averaged_softmax(tiny_shards, trained_checkpoint, tmp_path,
                                                                        capsys):
    from tests.evaluate.helpers import write_checkpoint

    a, config = load_model(trained_checkpoint)
    b, _ = load_model(trained_checkpoint)
    with torch.no_grad():
        # A second model that leans to class 0: 6 of 9 wrong alone, 2 of 9 with the first
        # (measured; 12 to 16 give the same picture).
        b.fc3.bias[0] += 14.0
    other = write_checkpoint(tmp_path / "other.pt", b, config)
    want = {"a": _hand_top1_errors([a], tiny_shards), "b": _hand_top1_errors([b], tiny_shards),
            "ensemble": _hand_top1_errors([a, b], tiny_shards)}
    # The ensemble's errors differ from each member's, so that using one member, or one
    # checkpoint twice, cannot pass.
    assert all(want["ensemble"][v] not in (want["a"][v], want["b"][v]) for v in VIEWS), want

    out = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(trained_checkpoint), "--checkpoint", str(other),
            "--batch-size", "4", "--num-workers", "1", "--backend", "reference", "--json", str(out)]
    assert trainer_main(args) == 0
    table = capsys.readouterr().out
    assert "2 CNNs (softmax averaged)" in table and "9 val images, each counted once" in table
    report = json.loads(out.read_text())
    assert report["count"] == 9
    for view in VIEWS:
        assert report["models"][0][view]["top1_error"] == pytest.approx(want["a"][view])
        assert report["models"][1][view]["top1_error"] == pytest.approx(want["b"][view])
        assert report["ensemble"][view]["top1_error"] == pytest.approx(want["ensemble"][view])
    # The trained model is right on most val images.
    assert want["a"]["tencrop"] < 0.5


def test_data_dir_without_val(tiny_shards, trained_checkpoint, tmp_path, capsys):
    data = tmp_path / "train_only"
    shutil.copytree(tiny_shards, data, ignore=shutil.ignore_patterns("val-*"))
    assert trainer_main(["evaluate", "--checkpoint", str(trained_checkpoint), "--data", str(data),
                         "--json", str(tmp_path / "e.json")]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "no val shards" in out and "Traceback" not in out
    assert not (tmp_path / "e.json").exists()


@pytest.mark.slow
def test_ddp_two_ranks_give_the_single_process_numbers(tiny_shards, trained_checkpoint, tmp_path):
    """torchrun with two CPU ranks (gloo): each image once over both ranks, same errors."""
    results = {}
    for world in (1, 2):
        out = tmp_path / f"eval{world}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
               "--master-port", str(29500 + os.getpid() % 1000), "--log-dir", str(tmp_path / f"elastic{world}"),
               "-m", "trainer", "evaluate",
               "--checkpoint", str(trained_checkpoint), "--batch-size", "2", "--num-workers", "1",
               "--backend", "reference", "--device", "cpu", "--json", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[world] = json.loads(out.read_text())
    assert results[2]["count"] == results[1]["count"] == 9
    assert results[2]["models"] == results[1]["models"]
