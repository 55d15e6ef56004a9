"""The augmentations of the paper's section 4.1, defined once for both backends.

`trainer train` and `trainer evaluate` reach this through `pipeline.make_loader`. The DALI
graph (`pipeline/dali.py`) and the reference loader (`pipeline/reference.py`) both take
their crop geometry, the lighting matrix, the mean and the order of operations from here:

    out = flip(crop(image - mean + lighting_offset))      (float32, 0-255 units)

with the crop a 224x224 window at integer offsets (x, y) in 0..32 of the 256x256 image,
the mean either the training set's mean image (cropped at the same window) or its
per-channel mean, and `lighting_offset = sum_i p_i * alpha_i * lambda255_i / 255`
(docs/design.md, "Lighting"), constant over the image, alpha ~ N(0, lighting_std) per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sharding import derive_seed
from preprocess.contract import CROP_SIZE, IMAGE_SIZE, DatasetStats

MAX_OFFSET = IMAGE_SIZE - CROP_SIZE  # 32: crops start at 0..32 inclusive, 33 positions
CROP_POSITIONS = MAX_OFFSET + 1
CENTER_OFFSET = MAX_OFFSET // 2  # 16

MODES = ("train", "center", "tencrop")
MEANS = ("image", "channel")

# Ten-crop order: four corners and the centre, then the same five mirrored (x, y, flip).
_FIVE = ((0, 0), (MAX_OFFSET, 0), (0, MAX_OFFSET), (MAX_OFFSET, MAX_OFFSET), (CENTER_OFFSET, CENTER_OFFSET))
TEN_CROPS: tuple[tuple[int, int, bool], ...] = tuple((x, y, False) for x, y in _FIVE) + tuple(
    (x, y, True) for x, y in _FIVE
)


def lighting_matrix(stats: DatasetStats) -> np.ndarray:
    """M with offset = M @ alpha: column i is p_i * lambda255_i / 255 (float64, 3x3).

    The eigenvalues in stats.npz are on the 0-255 scale; the paper's eigenpairs are those of
    the 0-1 covariance, whose offset in 0-255 units is p_i * alpha_i * lambda255_i / 255.
    """
    return np.asarray(stats.eigvecs, np.float64) * (np.asarray(stats.eigvals, np.float64) / 255.0)[None, :]


def lighting_offset(alpha: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Per-image RGB offset for alpha of shape (..., 3), in 0-255 units."""
    return np.asarray(alpha, np.float64) @ np.asarray(matrix, np.float64).T


def mean_array(stats: DatasetStats, mean: str) -> np.ndarray:
    """The mean subtracted before cropping: (256, 256, 3) or (1, 1, 3), float32 HWC."""
    if mean == "image":
        return np.ascontiguousarray(stats.mean_image, np.float32)
    if mean == "channel":
        return np.asarray(stats.mean_rgb, np.float32).reshape(1, 1, 3)
    raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")


@dataclass(frozen=True)
class TrainParams:
    """One batch's random augmentation: crop offsets, mirror flags and lighting alphas."""

    x: np.ndarray  # (n,) int, 0..32
    y: np.ndarray  # (n,) int, 0..32
    flip: np.ndarray  # (n,) bool
    alpha: np.ndarray  # (n, 3) float


def draw_train_params(rng: np.random.Generator, n: int, lighting_std: float) -> TrainParams:
    """The one draw of a batch's parameters, for both backends (see batch_train_params)."""
    return TrainParams(
        x=rng.integers(0, CROP_POSITIONS, n),
        y=rng.integers(0, CROP_POSITIONS, n),
        flip=rng.random(n) < 0.5,
        alpha=rng.normal(0.0, lighting_std, (n, 3)) if lighting_std > 0 else np.zeros((n, 3)),
    )


def batch_train_params(seed: int, epoch: int, rank: int, b: int, n: int, lighting_std: float) -> TrainParams:
    """Batch b's random parameters, drawn from (seed, epoch, rank, b) alone: both backends
    use them, so they read the same crops, and resuming at any batch is exact."""
    return draw_train_params(np.random.default_rng(derive_seed(seed, epoch, rank, b, 4)), n, lighting_std)


def center_params(n: int) -> TrainParams:
    c = np.full(n, CENTER_OFFSET)
    return TrainParams(x=c, y=c.copy(), flip=np.zeros(n, bool), alpha=np.zeros((n, 3)))


def crop_window(image: np.ndarray, x: int, y: int, flip: bool) -> np.ndarray:
    """The 224x224 window at (x, y) of a uint8 HWC image, mirrored when `flip`: a view."""
    patch = image[y : y + CROP_SIZE, x : x + CROP_SIZE]
    return patch[:, ::-1] if flip else patch


def augment_image(
    image: np.ndarray, mean: np.ndarray, x: int, y: int, flip: bool, offset: np.ndarray | None = None
) -> np.ndarray:
    """The reference computation for one image: uint8 HWC 256 -> float32 HWC 224.

    Mean and offset are applied on the whole image and then cropped, the same order of
    float32 operations as the DALI graph, so the two differ only where the decoders do.
    """
    centered = image.astype(np.float32) - mean
    if offset is not None:
        centered += np.asarray(offset, np.float32)
    return np.ascontiguousarray(crop_window(centered, x, y, flip))


def ten_crop_image(image: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(10, 224, 224, 3) float32: the four corners and the centre, then their mirrors."""
    return np.stack([augment_image(image, mean, x, y, f) for x, y, f in TEN_CROPS])
