"""The random augmentation parameters of the DALI graph, and the lighting formula."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from pipeline import make_loader
from pipeline.augment import CROP_POSITIONS, TEN_CROPS, batch_train_params
from preprocess.contract import load_stats

N = CROP_POSITIONS * CROP_POSITIONS * 10  # 10 expected per cell of the 33x33 grid


@pytest.fixture(scope="module")
def drawn():
    """One large batch of the draw both backends take (no decoding needed to test it)."""
    p = batch_train_params(1234, 0, 0, 0, N, 0.1)
    return p.x, p.y, p.flip.astype(np.int64), p.alpha


def test_crop_positions_uniform_over_all_33x33(drawn):
    x, y, _, _ = drawn
    assert x.min() == 0 and x.max() == 32 and y.min() == 0 and y.max() == 32
    counts = np.bincount(y * CROP_POSITIONS + x, minlength=CROP_POSITIONS**2)
    assert (counts > 0).all(), "some crop position never drawn"
    assert sps.chisquare(counts).pvalue > 1e-3
    for marginal in (x, y):
        assert sps.chisquare(np.bincount(marginal, minlength=CROP_POSITIONS)).pvalue > 1e-3


def test_flips_are_about_half(drawn):
    flip = drawn[2]
    assert set(np.unique(flip)) == {0, 1}
    assert abs(flip.mean() - 0.5) < 4 * np.sqrt(0.25 / N)


def test_alpha_is_normal_with_the_given_std(drawn):
    alpha = drawn[3]
    assert np.allclose(alpha.mean(0), 0, atol=4 * 0.1 / np.sqrt(N))
    assert np.allclose(alpha.std(0), 0.1, rtol=0.03)
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.05
    assert sps.kstest(alpha[:, 0] / 0.1, "norm").pvalue > 1e-3


def test_lighting_offset_equals_float64_hand_computation(shard_dir):
    """offset = sum_i p_i alpha_i lambda255_i / 255, in 0-255 units (docs/design.md, Lighting)."""
    stats = load_stats(shard_dir)
    loader = make_loader(shard_dir, batch_size=16, backend="dali", lighting_std=0.1)
    next(iter(loader))
    alpha, offset = loader.last_params["alpha"].astype(np.float64), loader.last_params["offset"]
    for a, got in zip(alpha, offset):
        want = np.zeros(3)
        for i in range(3):
            want += stats.eigvecs[:, i] * a[i] * stats.eigvals[i] / 255.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the offsets are a few 0-255 levels, not hundreds (the scale decision in docs/design.md)
    assert 0.05 < np.abs(offset).max() < 20


def test_ten_crops_are_corners_centre_and_mirrors():
    five = {(0, 0), (32, 0), (0, 32), (32, 32), (16, 16)}
    assert {(x, y) for x, y, f in TEN_CROPS if not f} == five
    assert {(x, y) for x, y, f in TEN_CROPS if f} == five
    assert [f for _, _, f in TEN_CROPS] == [False] * 5 + [True] * 5
