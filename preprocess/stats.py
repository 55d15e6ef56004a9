"""Training-set statistics (`stats.npz`) from moments that merge exactly.

Used by `preprocess shard` (one `Moments` per train shard, accumulated in the same pass
that writes it) and `preprocess stats --merge`. Pixels are uint8, so the first and second
moments are kept as exact integers: a per-image sum of products is at most
65,536 * 255^2 < 2^53, so float64 dot products compute it exactly, and the int64 running
sums never round. Merging in any order or grouping therefore gives the same bits, which is
what makes stats.npz independent of the number of workers and parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.tempfiles import replacing
from preprocess.contract import IMAGE_SIZE, DatasetStats


@dataclass
class Moments:
    size: int = IMAGE_SIZE
    n_images: int = 0
    sum_outer: np.ndarray = field(default=None)  # (3, 3) int64: sum of x x^T over pixels
    sum_image: np.ndarray = field(default=None)  # (size, size, 3) int64 per-pixel sum; readers _flush() first

    def __post_init__(self):
        if self.sum_outer is None:
            self.sum_outer = np.zeros((3, 3), np.int64)
            self.sum_image = np.zeros((self.size, self.size, 3), np.int64)
        # Per-pixel sums go to uint16 first (257 images of 255 fit), then to int64: adding
        # uint8 to int64 directly cost three times as much.
        self._pending = np.zeros((self.size, self.size, 3), np.uint16)
        self._pending_n = 0
        self._planes = np.empty((3, self.size * self.size), np.float64)

    def add(self, pixels: np.ndarray) -> None:
        """Accumulate one (size, size, 3) uint8 image."""
        if pixels.dtype != np.uint8 or pixels.shape != self.sum_image.shape:
            raise ValueError(f"expected uint8 {self.sum_image.shape}, got {pixels.dtype} {pixels.shape}")
        # Six dot products of contiguous float64 planes: exact (see the module docstring).
        # einsum, not np.dot: BLAS would start its own threads in every worker process,
        # which then fight over the cores (two workers ran slower than one).
        planes = self._planes
        np.copyto(planes, pixels.reshape(-1, 3).T)
        for i in range(3):
            for j in range(i, 3):
                self.sum_outer[i, j] += int(np.einsum("i,i->", planes[i], planes[j]))
                if j != i:
                    self.sum_outer[j, i] = self.sum_outer[i, j]
        np.add(self._pending, pixels, out=self._pending)
        self._pending_n += 1
        if self._pending_n == 257:
            self._flush()
        self.n_images += 1

    def _flush(self) -> None:
        if self._pending_n:
            self.sum_image += self._pending
            self._pending.fill(0)
            self._pending_n = 0

    def merge(self, other: Moments) -> Moments:
        if other.size != self.size:
            raise ValueError("cannot merge moments of different image sizes")
        self._flush()
        other._flush()
        self.n_images += other.n_images
        self.sum_outer += other.sum_outer
        self.sum_image += other.sum_image
        return self

    @property
    def sum_rgb(self) -> np.ndarray:
        """(3,) int64 sum of pixel values; the per-pixel sums already hold it exactly."""
        self._flush()
        return self.sum_image.sum(axis=(0, 1))

    @property
    def n_pixels(self) -> int:
        return self.n_images * self.size * self.size

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        """Write the moments (and any `extra` arrays) atomically."""
        path = Path(path)
        self._flush()
        # uint32 per-pixel sums hold up to 16.8M images exactly and halve the file; no
        # compression: it cost more time per shard than the statistics themselves.
        image = self.sum_image.astype(np.uint32) if self.n_images * 255 < 2**32 else self.sum_image
        with replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, n_images=np.int64(self.n_images), sum_rgb=self.sum_rgb, sum_outer=self.sum_outer,
                     sum_image=image, **extra)

    @classmethod
    def load(cls, path: str | Path) -> Moments:
        with np.load(path) as z:
            image = np.asarray(z["sum_image"], np.int64)
            return cls(image.shape[0], int(z["n_images"]), np.asarray(z["sum_outer"], np.int64), image)

    def finish(self) -> DatasetStats:
        """Mean, covariance (population: divided by the pixel count) and its eigenpairs."""
        n = self.n_pixels
        if n == 0:
            raise ValueError("no training pixels: every train image was rejected")
        s1 = [int(v) for v in self.sum_rgb]
        s2 = [[int(v) for v in row] for row in self.sum_outer]
        # n^2 cov = n S2 - S1 S1^T, computed in Python integers, then one rounding.
        cov = np.array([[(n * s2[i][j] - s1[i] * s1[j]) / (n * n) for j in range(3)] for i in range(3)])
        mean = np.array([v / n for v in s1])
        eigvals, eigvecs = np.linalg.eigh(cov)
        order = np.argsort(eigvals)[::-1]
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        # Fix each eigenvector's sign (largest component positive) so reruns agree.
        signs = np.sign(eigvecs[np.argmax(np.abs(eigvecs), axis=0), range(3)])
        eigvecs = eigvecs * np.where(signs == 0, 1.0, signs)
        self._flush()
        mean_image = (self.sum_image / self.n_images).astype(np.float32)
        return DatasetStats(n, mean, cov, eigvals, eigvecs, mean_image)


def merge_all(moments: Iterable[Moments], size: int = IMAGE_SIZE, total: Moments | None = None) -> Moments:
    """The sum of `moments`, taken one at a time: pass a generator (of `Moments.load`s, say)
    and only the running total and one term are ever in memory, however many there are."""
    total = Moments(size) if total is None else total
    for m in moments:
        total.merge(m)
    return total
