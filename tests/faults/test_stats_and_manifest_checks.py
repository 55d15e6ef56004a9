"""Issue 26, rows 3, 4 and 11: a stats.npz that does not fit the manifest's images, and a
manifest whose counts disagree with the index files, stop `trainer train` and `trainer
evaluate` with one line and exit 4 (before: a traceback, or a run on a wrong mean window,
or a run on a manifest describing other shards).

The readers are the real ones, run in-process on a copy of the session's `demo_shards`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from common import exitcodes
from preprocess.cli import main as preprocess_main
from trainer.cli import main as trainer_main

TINY = ["--width", "0.0625", "--batch-size", "8", "--num-workers", "1", "--device", "cpu",
        "--backend", "reference", "--epochs", "1", "--max-steps", "1"]


@pytest.fixture
def shards(demo_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(demo_shards, out, ignore=shutil.ignore_patterns(".preprocess"))
    return out


@pytest.fixture(scope="module")
def checkpoint(demo_shards, tmp_path_factory):
    from tests.evaluate.helpers import write_checkpoint
    from trainer.run.config import TrainConfig
    from trainer.run.model import build_model

    tmp = tmp_path_factory.mktemp("ckpt")
    config = TrainConfig(data=str(demo_shards), run_dir=str(tmp / "run"), num_classes=10, width=0.0625).to_dict()
    return str(write_checkpoint(tmp / "model.pt", build_model(config), config))


def _one_line(text: str, *words: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) == 1, text
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def _train(data, tmp_path) -> int:
    return trainer_main(["train", "--data", str(data), "--run-dir", str(tmp_path / "run"), *TINY])


def _evaluate(data, checkpoint, tmp_path) -> int:
    return trainer_main(["evaluate", "--checkpoint", checkpoint, "--data", str(data), "--device", "cpu",
                         "--backend", "reference", "--num-workers", "1", "--batch-size", "8",
                         "--json", str(tmp_path / "evaluation.json")])


def _replace_mean_image(data, mean_image: np.ndarray) -> None:
    with np.load(data / "stats.npz") as z:
        fields = dict(z)
    fields["mean_image"] = mean_image
    with open(data / "stats.npz", "wb") as f:  # as another tool would: not through DatasetStats
        np.savez(f, **fields)


@pytest.mark.parametrize("mean_image", [np.full((128, 128, 3), 120, np.float32),  # row 3: a traceback before
                                        np.full((300, 300, 3), 120, np.float32),  # row 4: a wrong window, exit 0
                                        np.full((256, 256, 3), 120, np.int64),  # integer pixels: another file's
                                        np.full((256, 256, 3), "1", "<U1")],  # text
                         ids=["128x128", "300x300", "int64", "text"])
def test_a_mean_image_that_does_not_fit_the_manifest_is_exit_4_in_one_line(shards, tmp_path, capsys, checkpoint,
                                                                           mean_image):
    _replace_mean_image(shards, mean_image)
    assert _train(shards, tmp_path) == exitcodes.CORRUPT
    _one_line(capsys.readouterr().err, "stats.npz", "mean_image", "256x256", "preprocess shard")
    assert not list((tmp_path / "run").rglob("*.pt"))
    assert _evaluate(shards, checkpoint, tmp_path) == exitcodes.CORRUPT
    _one_line(capsys.readouterr().out, "stats.npz", "mean_image", "256x256")
    assert preprocess_main(["verify", str(shards)]) == exitcodes.CORRUPT
    assert "mean_image" in capsys.readouterr().err


def _edit_manifest(data, edit) -> None:
    path = data / "dataset.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _more_in_a_shard(split):
    def edit(m):
        m["splits"][split]["shards"][0]["count"] += 5
        m["splits"][split]["count"] += 5
    return edit


def _more_in_the_split(split):
    def edit(m):
        m["splits"][split]["count"] += 5
    return edit


def _a_shard_less(split):
    def edit(m):
        gone = m["splits"][split]["shards"].pop()
        m["splits"][split]["count"] -= gone["count"]
    return edit


@pytest.mark.parametrize("edit", [_more_in_a_shard, _more_in_the_split, _a_shard_less],
                         ids=["shard-count", "split-count", "unlisted-shard"])
def test_a_manifest_whose_counts_disagree_with_the_index_files_is_exit_4(shards, tmp_path, capsys, checkpoint, edit):
    """Row 11: `verify` said exit 4, but `train` ran on without a word."""
    _edit_manifest(shards, edit("train"))
    assert _train(shards, tmp_path) == exitcodes.CORRUPT
    _one_line(capsys.readouterr().err, "dataset.json", "train", "preprocess verify")
    assert not list((tmp_path / "run").rglob("*.pt"))
    _edit_manifest(shards, edit("val"))
    assert _evaluate(shards, checkpoint, tmp_path) == exitcodes.CORRUPT
    _one_line(capsys.readouterr().out, "dataset.json", "val", "preprocess verify")
