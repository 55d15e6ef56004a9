"""The GPU equivalence check (`decoder_residual.py`) shown on the CPU: it accepts a real
second JPEG decoder and rejects a wrong lighting sign, a missing lighting offset, a mean
window one pixel off, and a wrong flip.

The second decoder is libjpeg-turbo with its fast integer IDCT and fast upsampling
(simplejpeg's fastdct/fastupsample): pixels differ from the default decode by 1.7 levels on
average, as nvJPEG's differ from libjpeg-turbo's.
"""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
from decoder_residual import assert_equal_up_to_decoder, residual_figures, train_rows
from synthetic_shards import TRAIN_SIZES, sample_location

from pipeline import make_loader
from pipeline.augment import mean_array


def _other_decoder(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)


def _locate(n: int):
    return sample_location(TRAIN_SIZES, n, 0)


@pytest.fixture(scope="module")
def dali_batch(shard_dir):
    loader = make_loader(shard_dir, batch_size=16, backend="dali", lighting_std=1.0)
    images, labels = next(iter(loader))
    return loader, images.movedim(-3, -1).float().numpy(), labels, loader.last_params


def test_dali_batch_equals_reference_from_another_decoder(dali_batch):
    loader, got, labels, params = dali_batch
    want = train_rows(loader, labels, params, _locate, _other_decoder, mean=mean_array(loader.stats, "image"))
    figures = assert_equal_up_to_decoder(got, want)
    assert figures["mean_abs"] > 0.5, "the two decoders should really differ, or this shows nothing"


def _wrong(kind: str, loader, params):
    mean = mean_array(loader.stats, "image")
    if kind == "lighting_sign":
        return params, dict(mean=mean, lighting_sign=-1.0)
    if kind == "no_lighting":
        return params, dict(mean=mean, lighting_sign=0.0)
    if kind == "mean_window_off_by_one":
        return params, dict(mean=np.roll(mean, 1, axis=1))
    flipped = {**params, "flip": 1 - np.asarray(params["flip"])}
    return flipped, dict(mean=mean)


@pytest.mark.parametrize("kind", ["lighting_sign", "no_lighting", "mean_window_off_by_one", "flip"])
def test_each_kind_of_error_is_caught(dali_batch, kind):
    loader, got, labels, params = dali_batch
    wrong_params, kw = _wrong(kind, loader, params)
    want = train_rows(loader, labels, wrong_params, _locate, _other_decoder, **kw)
    with pytest.raises(AssertionError):
        assert_equal_up_to_decoder(got, want)
    # Beyond its magnitude checks, each of these errors leaves fractional residuals.
    assert residual_figures(got, want)["non_integer_max"] > 0.1
