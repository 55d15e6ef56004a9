"""DALI and the reference loader compute the same tensor given the same crop, flip and alpha.

The only allowed difference is the JPEG decoder's. On CPU both decode with libjpeg-turbo
and agree to float32 rounding (measured max |diff| ~1e-6 in 0-255 units); the assert
leaves room for a different libjpeg-turbo build (DECODER_BOUND). GPU decode (nvJPEG) is
compared per pixel in the `gpu` test with the decoder difference taken out
(`decoder_residual.py`, whose power is shown on the CPU in test_decoder_residual.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from decoder_residual import assert_equal_up_to_decoder, train_rows
from synthetic_shards import TRAIN_SIZES, VAL_SIZES, sample_location

from pipeline import make_loader
from pipeline.augment import augment_image, lighting_matrix, lighting_offset, mean_array, ten_crop_image
from pipeline.reference import ShardReader

DECODER_BOUND = 1e-3  # CPU: max |DALI - reference| in 0-255 units
# The GPU test draws alphas with 10x the paper's spread (offsets of ~5 levels, not ~0.5),
# so that a lighting error is far outside the decoders' differences.
GPU_LIGHTING_STD = 1.0


def reference_rows(loader, labels, params, sizes, first):
    """What the reference computation gives for each row, from the same JPEG bytes."""
    reader = ShardReader(loader.index)
    mean = mean_array(loader.stats, loader.cfg.mean)
    matrix = lighting_matrix(loader.stats)
    rows = []
    for j, label in enumerate(labels.tolist()):
        image, got_label, _ = reader.sample(*sample_location(sizes, label, first))
        assert got_label == label
        if loader.cfg.mode == "tencrop":
            rows.append(ten_crop_image(image, mean))
        elif loader.cfg.mode == "center":
            rows.append(augment_image(image, mean, 16, 16, False))
        else:
            off = lighting_offset(params["alpha"][j], matrix)
            rows.append(augment_image(image, mean, int(params["x"][j]), int(params["y"][j]),
                                      bool(params["flip"][j]), off))  # fmt: skip
    return np.stack(rows)


def as_hwc(images: torch.Tensor) -> np.ndarray:
    return images.movedim(-3, -1).float().cpu().numpy()


@pytest.mark.parametrize(
    "mode, dtype, channels_last, mean",
    [
        ("train", torch.float32, False, "image"),
        ("train", torch.float32, True, "image"),
        ("train", torch.float16, True, "channel"),
        ("train", torch.bfloat16, False, "image"),
        ("center", torch.float32, True, "image"),
        ("tencrop", torch.float32, False, "channel"),
    ],
)
def test_dali_equals_reference_given_same_params(shard_dir, mode, dtype, channels_last, mean):
    split = "train" if mode == "train" else "val"
    sizes, first = (TRAIN_SIZES, 0) if split == "train" else (VAL_SIZES, sum(TRAIN_SIZES))
    loader = make_loader(shard_dir, split=split, mode=mode, batch_size=8, backend="dali",
                         dtype=dtype, channels_last=channels_last, mean=mean)  # fmt: skip
    images, labels = next(iter(loader))[:2]
    assert images.dtype == dtype and labels.dtype == torch.int64
    shape = (8, 10, 3, 224, 224) if mode == "tencrop" else (8, 3, 224, 224)
    assert tuple(images.shape) == shape
    if channels_last:
        assert images.is_contiguous(memory_format=torch.channels_last)
    want = reference_rows(loader, labels, loader.last_params, sizes, first)
    got = as_hwc(images)
    # fp16/bf16: both sides are the float32 result rounded once, so compare after rounding
    want = torch.from_numpy(want).to(dtype).float().numpy()
    ulp = {torch.float32: 0.0, torch.float16: 0.125, torch.bfloat16: 1.0}[dtype]
    assert np.abs(got - want).max() <= DECODER_BOUND + ulp


def test_reference_loader_batches_match_its_own_definition(shard_dir):
    """The reference loader's batch b is augment_image with its drawn params (no hidden step)."""
    loader = make_loader(shard_dir, batch_size=8, backend="reference", num_workers=1)
    images, labels = next(iter(loader))
    p = loader.params(0)
    params = {"x": p.x, "y": p.y, "flip": p.flip, "alpha": p.alpha}
    want = reference_rows(loader, labels, params, TRAIN_SIZES, 0)
    assert np.abs(as_hwc(images) - want).max() == 0


def test_backends_agree_on_real_photos(demo_shards):
    """Centre crops of `preprocess shard` output (real photos) agree between backends."""
    got = {}
    for backend in ("dali", "reference"):
        loader = make_loader(demo_shards, split="val", mode="center", batch_size=8, backend=backend)
        got[backend] = [(b[0], b[1], b[2]) for b in loader]
    assert {b: len(batches) for b, batches in got.items()} == {"dali": 5, "reference": 5}  # 40 images, batches of 8
    for (a, la, va), (b, lb, vb) in zip(got["dali"], got["reference"]):
        assert torch.equal(la, lb) and torch.equal(va, vb)
        assert (a - b).abs().max().item() <= DECODER_BOUND


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_equals_reference_up_to_the_decoder(shard_dir):
    """Per pixel: GPU batch - CPU reference must be the decoders' (integer) difference only,
    small, and mean-free per row; the lighting offsets fed to DALI are the hand-computed ones."""
    loader = make_loader(shard_dir, batch_size=16, backend="dali", device="cuda", lighting_std=GPU_LIGHTING_STD)
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda and images.dtype == torch.float32
    params = loader.last_params
    flips = np.asarray(params["flip"]).reshape(-1)
    assert 0 < flips.sum() < len(flips), "the batch should hold both mirrored and unmirrored rows"
    # The lighting term on its own: the per-image offset fed to DALI against float64 by hand.
    want_offset = lighting_offset(np.asarray(params["alpha"]), lighting_matrix(loader.stats))
    assert np.abs(np.asarray(params["offset"]).reshape(-1, 3) - want_offset).max() < 1e-3
    assert np.abs(want_offset).mean() > 2.0, "offsets too small to tell a lighting error from the decoder"
    want = train_rows(loader, labels.cpu(), params, lambda n: sample_location(TRAIN_SIZES, n, 0),
                      mean=mean_array(loader.stats, "image"))
    figures = assert_equal_up_to_decoder(as_hwc(images), want)
    print(f"nvJPEG vs libjpeg-turbo: {figures}")
