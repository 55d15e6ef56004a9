"""Figure 4 (right): `trainer neighbors`, its saved feature index and the batched search."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import torch
from PIL import Image

from trainer.cli import main as trainer_main
from trainer.analysis.neighbors import index_dir_for, nearest, open_index


def test_nearest_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1000, 64)).astype(np.float16)
    sq = np.square(features.astype(np.float32)).sum(1)
    queries = torch.from_numpy(rng.normal(size=(7, 64)).astype(np.float32))
    d, rows = nearest(queries, features, sq, k=6, device="cpu", chunk=128)  # 8 chunks
    full = ((queries.numpy()[:, None, :] - features.astype(np.float32)[None]) ** 2).sum(-1)
    expected = np.argsort(full, axis=1)[:, :6]
    assert np.array_equal(rows.numpy(), expected)
    assert np.allclose(d.numpy(), np.take_along_axis(full, expected, 1), rtol=1e-4, atol=1e-3)


def _first_train_image(data, out):
    shard = sorted(data.glob("train-*.tar"))[1]  # not the first shard: offsets must be per shard
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        path = out / member.name
        path.write_bytes(tar.extractfile(member).read())
    return path, member.name[: -len(".jpg")]


def _own_checkpoint(trained_checkpoint, tmp_path):
    """A copy of the session's checkpoint, so that its feature index is this test's alone."""
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    shutil.copy(trained_checkpoint, path)
    return path


def test_training_image_finds_itself_and_index_is_reused(tiny_shards, trained_checkpoint, tmp_path, capsys):
    checkpoint = _own_checkpoint(trained_checkpoint, tmp_path)
    query, key = _first_train_image(tiny_shards, tmp_path)
    sheet = tmp_path / "sheet.png"
    args = ["neighbors", "--checkpoint", str(checkpoint), "--num-workers", "1", "-o", str(sheet), str(query)]
    assert trainer_main(args) == 0
    out = capsys.readouterr().out
    assert "building the feature index" in out
    lines = out.splitlines()
    rows = lines[lines.index(str(query)) + 1 :][:6]
    assert len(rows) == 6
    distance, nearest_key = rows[0].split()[:2]
    # The query is a stored training image; only the JPEG round trip separates them.
    assert nearest_key == key and float(distance) < 0.5

    index_dir = index_dir_for(checkpoint)
    meta = json.loads((index_dir / "meta.json").read_text())
    index = open_index(index_dir)
    assert meta["count"] == 12 == len(index["keys"]) == len(set(index["keys"]))
    assert index["features"].shape == (12, meta["dim"]) and index["features"].dtype == np.float16

    mtime = (index_dir / "features.npy").stat().st_mtime_ns
    assert trainer_main(args) == 0
    assert "using the feature index" in capsys.readouterr().out
    assert (index_dir / "features.npy").stat().st_mtime_ns == mtime  # built once, not again

    image = Image.open(sheet)
    assert image.width > 6 * image.height // 2  # one row: the query and six neighbours


def test_hidden_features_are_what_the_index_holds(tiny_shards, trained_checkpoint, tmp_path, capsys):
    """The index this test builds itself with `trainer neighbors` (no other test's files)."""
    from tests.evaluate.helpers import train_inputs
    from trainer.analysis.inference import load_model

    checkpoint = _own_checkpoint(trained_checkpoint, tmp_path)
    query, _ = _first_train_image(tiny_shards, tmp_path)
    assert trainer_main(["neighbors", "--checkpoint", str(checkpoint), "--num-workers", "1",
                         "-o", str(tmp_path / "sheet.png"), str(query)]) == 0
    assert "building the feature index" in capsys.readouterr().out
    model, config = load_model(checkpoint)
    x, _, keys = train_inputs(tiny_shards, config)
    with torch.no_grad():
        expected = model.hidden(x).numpy()
    index = open_index(index_dir_for(checkpoint))
    order = [index["keys"].index(k) for k in keys]
    assert np.allclose(np.asarray(index["features"])[order], expected, rtol=1e-2, atol=1e-2)
