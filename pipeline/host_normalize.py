"""The float step on the host: uint8 window - mean window + offset.

`pipeline.dali` uses it in train mode on the CPU: its graph then ends with the mirrored
uint8 224x224 windows, and this turns them into the float batch. `pipeline.reference`
uses it in every mode: its workers send the windows, its rank makes the float batch.
DALI runs each operator over the whole batch before the next one, so there the float step
streamed the 77 MB batch and a 77 MB batch of mean windows through memory twice: ~45 ms of thread time per batch of
128 on the 2-core VM, more than the decode. Here it runs per sample, the mean image
cache-resident and each window a view of it: ~7-9 ms. numpy, not torch: torch's intra-op
threads would wake beside DALI's on every call and slow both (measured: 3,441 against
2,058 images/s).

The float32 operations are the reference's, in its order (`pipeline.augment.augment_image`):
(image - mean) + offset, so for the same decoded pixels the two backends agree exactly.
On a GPU, DALI keeps doing this step on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.augment import MAX_OFFSET
from pipeline.hostmem import empty_host
from preprocess.contract import CROP_SIZE

_ROW = CROP_SIZE * 3  # floats in one HWC output row


class HostNormalizer:
    """Turns a batch of mirrored uint8 windows into the float batch, given each sample's
    crop offsets, flip and lighting offset (the DALI graph's own outputs)."""

    def __init__(self, mean: np.ndarray, channels_last: bool):
        hwc = np.ascontiguousarray(mean, np.float32)  # (256, 256, 3) or (1, 1, 3)
        self.channels_last = channels_last
        self.per_pixel = hwc.shape[0] > 1
        if not self.per_pixel:  # a per-channel mean broadcasts: over HWC rows, or as (3, 1, 1)
            self.mean = np.tile(hwc.reshape(3), CROP_SIZE) if channels_last else hwc.reshape(3, 1, 1)
            return
        self.mean = hwc if channels_last else np.ascontiguousarray(hwc.transpose(2, 0, 1))
        width_axis = 1 if channels_last else 2
        self.mirrored = np.ascontiguousarray(np.flip(self.mean, width_axis))

    def window(self, x: int, y: int, flip: bool) -> np.ndarray:
        """The mean under a sample's window, mirrored with it: a view, nothing is copied."""
        if not self.per_pixel:
            return self.mean
        # Mirroring the window [x, x + 224) of the mean is the window [32 - x, ...) of the
        # mirrored mean.
        source, left = (self.mirrored, MAX_OFFSET - x) if flip else (self.mean, x)
        rows, cols = slice(y, y + CROP_SIZE), slice(left, left + CROP_SIZE)
        if self.channels_last:
            return source[rows, cols].reshape(CROP_SIZE, _ROW)  # rows stay contiguous: a view
        return source[:, rows, cols]

    def _shape(self, sample: np.ndarray) -> np.ndarray:
        # HWC samples as (224, 672) rows: numpy's loops over a trailing axis of 3 were 3x slower.
        return sample.reshape(CROP_SIZE, _ROW) if self.channels_last else sample

    def __call__(self, windows: torch.Tensor, params: dict, dtype: torch.dtype, pin: bool = False) -> torch.Tensor:
        n = windows.shape[0]
        # Pinned blocks come from torch's caching host allocator: allocated once, then reused.
        out = torch.empty(windows.shape, dtype=dtype, pin_memory=True) if pin else empty_host(windows.shape, dtype)
        src, dst = windows.numpy(), out.numpy()
        offsets = np.asarray(params["offset"], np.float32).reshape(n, 3)
        x, y, flip = (np.asarray(params[k]).reshape(-1) for k in ("x", "y", "flip"))
        # float16 output: compute in float32, round once, as the GPU graph does.
        scratch = None if dtype == torch.float32 else self._shape(np.empty(windows.shape[1:], np.float32))
        for i in range(n):
            o = self._shape(dst[i]) if scratch is None else scratch
            np.copyto(o, self._shape(src[i]))
            np.subtract(o, self.window(int(x[i]), int(y[i]), bool(flip[i])), out=o)
            offset = np.tile(offsets[i], CROP_SIZE) if self.channels_last else offsets[i].reshape(3, 1, 1)
            np.add(o, offset, out=o)
            if scratch is not None:
                np.copyto(self._shape(dst[i]), scratch)
        return out
