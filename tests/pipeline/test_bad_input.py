"""Damaged JPEGs inside shards, and missing prepared data."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from synthetic_shards import TRAIN_SIZES, jpeg_bytes, sample_location, synthetic_image, write_split, write_stats

from pipeline import badinput, make_loader
from pipeline.base import DAMAGED as LOADER_DAMAGED
from preprocess.contract import DataError

GOOD = jpeg_bytes(synthetic_image(np.random.default_rng(9)))
DAMAGED = {3: GOOD[: len(GOOD) // 3], 13: b"\xff\xd8 not a jpeg at all" * 8}


@pytest.fixture(scope="module")
def damaged_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged")
    images = write_split(out, "train", [12, 12], seed=4, damaged=DAMAGED)
    write_split(out, "val", [12, 12], seed=5, first_label=24, damaged={24 + k: v for k, v in DAMAGED.items()})
    write_stats(out, images)
    return out


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_damaged_jpegs_are_reported_with_shard_and_key_and_masked_in_a_batch_of_full_shape(
        damaged_dir, backend, caplog):
    # Masked, not dropped: every batch keeps the loader's shape (a compiled step sees one
    # shape all run), the damaged row's label is the loss's ignore_index, its pixels zero.
    loader = make_loader(damaged_dir, batch_size=4, backend=backend, num_workers=1)
    batches = list(loader)
    assert all(x.shape[0] == len(y) == 4 for x, y in batches)
    labels = [n for _, y in batches for n in y.tolist()]
    assert sorted(n for n in labels if n != LOADER_DAMAGED) == sorted(set(range(24)) - set(DAMAGED))
    assert labels.count(LOADER_DAMAGED) == 2
    for x, y in batches:
        assert not x[y == LOADER_DAMAGED].any() and torch.isfinite(x).all()
    assert sorted(loader.skipped) == ["train-000000.tar:train_000003", "train-000001.tar:train_000013"]
    assert "train_000003" in caplog.text and "train-000000.tar" in caplog.text
    loader.set_epoch(1)  # next epoch: still skipped, still counted once
    assert len([n for _, y in loader for n in y.tolist() if n != LOADER_DAMAGED]) == 22
    assert len(loader.skipped) == 2


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_damaged_val_samples_are_masked_not_counted(damaged_dir, backend):
    loader = make_loader(damaged_dir, split="val", mode="center", batch_size=5, backend=backend, num_workers=1)
    seen = [n for _, y, valid in loader for n in y[valid].tolist()]
    assert sorted(seen) == sorted(set(range(24, 48)) - {27, 37})
    assert len(loader.skipped) == 2


def test_no_shards_names_the_command(tmp_path):
    with pytest.raises(DataError, match="preprocess shard"):
        make_loader(tmp_path, backend="reference")


def test_missing_stats_names_the_command(tmp_path, damaged_dir):
    for p in damaged_dir.glob("train-*"):
        shutil.copy(p, tmp_path / p.name)
    with pytest.raises(DataError, match="preprocess shard"):
        make_loader(tmp_path, backend="dali")
    (tmp_path / "train-000000.idx").unlink()
    shutil.copy(damaged_dir / "stats.npz", tmp_path / "stats.npz")
    with pytest.raises(DataError, match="preprocess shard"):
        make_loader(tmp_path, backend="dali")


def test_dali_missing_falls_back_to_reference(damaged_dir, monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "pipeline.dali", None)  # import now fails
    loader = make_loader(damaged_dir, backend="dali", batch_size=4)
    assert loader.backend == "reference"
    assert "DALI is not importable" in caplog.text


def test_late_damage_is_found_in_its_batch_alone_and_stays_skipped(shard_dir, tmp_path, caplog):
    """A damaged sample late in the epoch: only the failed batch's samples are decoded one
    by one, exactly that sample is skipped, every other row comes out as from the undamaged
    shards, and the next epoch skips it without failing again (the rebuilt pipeline's
    source replaces it)."""
    kw = dict(batch_size=4, backend="dali", num_workers=1, seed=5)
    clean = [(x, y) for x, y in make_loader(shard_dir, **kw)]
    failing = 21
    victim = int(clean[failing][1][2])
    images = write_split(tmp_path, "train", TRAIN_SIZES, seed=3, damaged={victim: DAMAGED[13]})
    write_stats(tmp_path, images)

    caplog.set_level(logging.INFO, logger=badinput.__name__)
    loader = make_loader(tmp_path, **kw)
    damaged = [(x, y) for x, y in loader]
    assert loader.skipped == [f"train-{sample_location(TRAIN_SIZES, victim)[0]:06d}.tar:train_{victim:06d}"]
    # One decoder for the batch's samples, built once: the victim (a cut JPEG) is named by
    # its missing end marker before any decode, so no rejection forces a rebuild.
    assert f"batch {failing} of epoch 0 failed: 4 samples decoded one by one (1 decoder builds), 1 damaged" \
        in caplog.text
    assert len(damaged) == len(clean)
    for b, ((x, y), (cx, cy)) in enumerate(zip(damaged, clean)):
        keep = cy != victim
        assert x.shape == cx.shape, f"batch {b}"  # masked in place, never dropped
        assert torch.equal(y, torch.where(keep, cy, LOADER_DAMAGED)), f"batch {b}"
        assert torch.equal(x[keep], cx[keep]) and not x[~keep].any(), f"batch {b}"
    real = lambda batches: sum(int((y != LOADER_DAMAGED).sum()) for _, y in batches)  # noqa: E731
    assert real(damaged) == real(clean) - 1
    caplog.clear()
    loader.set_epoch(1)
    assert real(loader) == real(clean) - 1
    assert "failed" not in caplog.text
