"""A batch against its reference computation when the JPEG decoders differ (nvJPEG on a
GPU, libjpeg-turbo on the CPU): exact in everything but the decoder.

Why the residual must be whole numbers: a decoder's output is uint8, and everything after it
is linear (mean window subtracted, lighting offset added, crop, mirror). So for the same
crop, flip, alpha and mean, batch - reference = the decoders' pixel difference, cropped and
mirrored like the image: an integer at every pixel, up to float32 rounding. A mean window
taken at another place, a lighting offset with the wrong sign or scale, or a missing one,
adds a fractional part almost everywhere. A wrong crop or flip keeps integers but moves
pixels by tens of levels: the mean residual and the mirrored contrast catch that.
"""

from __future__ import annotations

import numpy as np

from pipeline.augment import augment_image, lighting_matrix, lighting_offset
from pipeline.reference import ShardReader

# float32 arithmetic on values up to ~300: a few ulps of 3e-5, far below this.
INTEGER_TOL = 2e-3
# Decoders agree to a level or two on average and differ more only at sharp colour edges
# (chroma upsampling): the GPU check's bounds. Per row and channel the differences mostly
# average out (libjpeg-turbo's fast IDCT and upsampling against its default: 1.36 levels
# at most over 16 rows; the GPU check's nvJPEG rows stayed under 1), where a lighting
# offset drawn with the GPU test's spread moves a row by 5 levels on average.
MEAN_ABS_MAX = 3.0
P999_ABS_MAX = 48.0
ROW_CHANNEL_MEAN_MAX = 2.0
MIRROR_CONTRAST = 4.0


def train_rows(loader, labels, params: dict, locate, decode=None, *, mean: np.ndarray,
               lighting_sign: float = 1.0) -> np.ndarray:
    """The reference rows (N, 224, 224, 3) for a train batch: each row's image decoded by
    `decode(jpeg_bytes)` (default Pillow, as the reference loader) and augmented with the
    batch's own crop, flip and alpha. `locate(label)` gives (shard, sample)."""
    reader = ShardReader(loader.index)
    matrix = lighting_matrix(loader.stats)
    rows = []
    try:
        for j, label in enumerate(np.asarray(labels).tolist()):
            s, i = locate(label)
            if decode is None:
                image, got_label, _ = reader.sample(s, i)
                assert got_label == label
            else:
                image = decode(reader.jpeg_bytes(int(loader.index.global_id(s, i))))
            offset = lighting_sign * lighting_offset(params["alpha"][j], matrix)
            rows.append(augment_image(image, mean, int(params["x"][j]), int(params["y"][j]),
                                      bool(params["flip"][j]), offset))
    finally:
        reader.close()
    return np.stack(rows)


def residual_figures(got: np.ndarray, want: np.ndarray) -> dict:
    """got, want: (N, H, W, 3) in 0-255 units minus the mean."""
    r = got.astype(np.float64) - want.astype(np.float64)
    mirrored = np.abs(got.astype(np.float64) - want[:, :, ::-1].astype(np.float64)).mean()
    return {
        "non_integer_max": float(np.abs(r - np.round(r)).max()),
        "mean_abs": float(np.abs(r).mean()),
        "p999_abs": float(np.quantile(np.abs(r), 0.999)),
        "row_channel_mean_max": float(np.abs(r.mean(axis=(1, 2))).max()),
        "mirrored_mean_abs": float(mirrored),
    }


def assert_equal_up_to_decoder(got: np.ndarray, want: np.ndarray) -> dict:
    f = residual_figures(got, want)
    assert f["non_integer_max"] <= INTEGER_TOL, f"not a decoder difference (fractional residual): {f}"
    assert f["mean_abs"] <= MEAN_ABS_MAX and f["p999_abs"] <= P999_ABS_MAX, f"pixels too far apart: {f}"
    assert f["row_channel_mean_max"] <= ROW_CHANNEL_MEAN_MAX, f"a row's mean moved (lighting, mean): {f}"
    assert f["mirrored_mean_abs"] > MIRROR_CONTRAST * max(f["mean_abs"], 0.25), f"crop or flip: {f}"
    return f
