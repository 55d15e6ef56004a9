"""The reference backend: Pillow decode and numpy augmentation under torch's DataLoader.

`pipeline.make_loader(backend="reference")` returns it: the fallback where DALI is not
installed, and the baseline in `benchmarks/pipeline_bench.py`. It reads the same
per-rank sample ranges as DALI (`pipeline/sharding.py`), each sample by its offsets in
the split's shared index (`pipeline/splitindex.py`), and applies the augmentation of
`pipeline/augment.py`: workers decode and cut each sample's uint8 window, and the rank
makes the float batch with the step DALI's CPU graph ends with (`pipeline.host_normalize`):
a quarter of the bytes through shared memory, a worker's memory its own ~20 MB plus a
9.6 MB batch of windows at batch 64 (float batches were 38.5 MB), and 1.25x the train
images/s on two cores (benchmarks/README.md, "Pipeline"). Within a rank, batch start+k goes
to DataLoader worker k % num_workers, and its random parameters are drawn from (seed,
epoch, rank, b): the output does not depend on the number of workers, and resuming at batch k is exact and
costs nothing.

What scales with the dataset stays in the rank: the sampler (`EpochBatches`, in the rank's
process) turns each batch's epoch positions into global sample numbers, one binary
search a position, and sends a worker just (epoch, batch, sample numbers). Workers start
once per loader and persist across epochs; each maps the split's offsets table (one copy a
node, or a rank's for shards without the table file), so a worker's own memory does not
grow with the number of samples.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from common import mptemp
from pipeline.augment import (
    TEN_CROPS,
    center_params,
    crop_window,
    batch_train_params,
    lighting_matrix,
    lighting_offset,
    mean_array,
)
from pipeline.base import DAMAGED, BaseLoader, bad_label, parse_label
from pipeline.host_normalize import HostNormalizer
from pipeline.hostmem import empty_shared
from pipeline.samplebytes import MAX_OPEN_SHARDS, SampleBytes
from pipeline.sharding import EpochPlan
from pipeline.splitindex import SplitIndex
from preprocess.contract import CROP_SIZE, IMAGE_SIZE, DataError

log = logging.getLogger(__name__)


def decode_rgb(data: bytes) -> np.ndarray:
    """A stored JPEG -> (H, W, 3) uint8 RGB: Pillow's decode, as this loader and the analysis
    tools see a sample."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class ShardReader(SampleBytes):
    """Decoded samples through the split's offsets table; one per worker process."""

    def __init__(self, index: SplitIndex, num_classes: int | None = None, max_open: int = MAX_OPEN_SHARDS):
        super().__init__(index.tars, index.starts, index.table, max_open)
        self.index, self.num_classes = index, num_classes

    def read(self, g: int, decode=None) -> tuple[object, int, tuple[str, str] | None]:
        """(decode(JPEG), label, None), or (None, DAMAGED, ("shard:key", why)) for a sample whose
        label is not one of the classes or whose JPEG does not decode (default: to RGB)."""
        raw = self.label_bytes(g)
        label = parse_label(np.frombuffer(raw, np.uint8), self.num_classes)
        if label == DAMAGED:
            return None, DAMAGED, (self.name(g), self.damage(g, bad_label(np.frombuffer(raw, np.uint8))))
        try:
            return (decode or decode_rgb)(self.jpeg_bytes(g)), label, None
        except (OSError, ValueError, SyntaxError):
            return None, DAMAGED, (self.name(g), self.damage(g, "JPEG does not decode"))

    def sample_id(self, g: int) -> tuple[np.ndarray | None, int, tuple[str, str] | None]:
        """`read` of a sample the contract's size: a (256, 256, 3) uint8 image."""
        image, label, damage = self.read(g)
        if image is not None and image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DataError(f"{self.name(g)} is {image.shape}, the contract says 256x256 RGB: "
                            f"re-run `preprocess shard`")
        return image, label, damage

    def sample(self, s: int, i: int) -> tuple[np.ndarray | None, int, str]:
        """Sample i of shard s: (image or None, label, "shard:key")."""
        g = int(self.index.global_id(s, i))
        image, label, damage = self.sample_id(g)
        return image, label, damage[0] if damage else self.name(g)


class EpochBatches(Sampler):
    """The DataLoader's sampler, in the rank's process: (epoch, b, global sample numbers) for
    each batch b of the current epoch from `start` on. The loader sets the epoch before each
    iteration; the persistent workers get only these small tuples."""

    def __init__(self, index: SplitIndex, batch_size: int):
        self.index, self.batch_size = index, batch_size
        self.epoch, self.plan, self.positions, self.start = 0, None, np.zeros(0, np.int64), 0

    def set_epoch(self, epoch: int, plan: EpochPlan, positions: np.ndarray, start: int) -> None:
        self.epoch, self.plan, self.positions, self.start = epoch, plan, positions, start

    def ids(self, b: int) -> np.ndarray:
        rows = self.positions[b * self.batch_size : (b + 1) * self.batch_size]
        return self.index.global_id(*self.plan.locate(rows))

    def __iter__(self):
        for b in range(self.start, self.plan.num_batches):
            yield self.epoch, b, self.ids(b)

    def __len__(self) -> int:
        return max(0, self.plan.num_batches - self.start) if self.plan is not None else 0


@dataclass
class BatchMaker(Dataset):
    """Worker side: decodes the samples of one batch and cuts their windows (crop and mirror,
    uint8, in the final layout); the rank's `HostNormalizer` makes them float."""

    index: SplitIndex
    mode: str
    batch_size: int
    seed: int
    rank: int
    lighting_std: float
    channels_last: bool
    num_classes: int | None = None

    def __post_init__(self):
        self._reader: ShardReader | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_reader"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _reader=None)

    def params(self, epoch: int, b: int):
        if self.mode != "train":
            return center_params(self.batch_size)
        return batch_train_params(self.seed, epoch, self.rank, b, self.batch_size, self.lighting_std)

    def crops(self, epoch: int, b: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, flip, alpha) of each of the batch's n samples' windows, in order (ten a
        sample in tencrop mode)."""
        if self.mode == "tencrop":
            x, y, flip = (np.tile(np.array(v), n) for v in zip(*TEN_CROPS))
            return x, y, flip, np.zeros((10 * n, 3))
        p = self.params(epoch, b)
        return p.x[:n], p.y[:n], p.flip[:n], p.alpha[:n]

    def shape(self, n: int) -> tuple[int, ...]:
        crop = (CROP_SIZE, CROP_SIZE, 3) if self.channels_last else (3, CROP_SIZE, CROP_SIZE)
        return (n, 10, *crop) if self.mode == "tencrop" else (n, *crop)

    def __getitem__(self, item):
        epoch, b, ids = item
        if self._reader is None:
            self._reader = ShardReader(self.index, self.num_classes)
        x, y, flip, _ = self.crops(epoch, b, len(ids))
        # uint8 windows, a quarter of the float batch: written once, into memory the rank maps.
        in_worker = get_worker_info() is not None
        out = (empty_shared if in_worker else torch.zeros)(self.shape(len(ids)), dtype=torch.uint8)
        windows = out.numpy().reshape(-1, *out.shape[-3:])
        per = len(windows) // max(len(ids), 1)
        labels, damaged = np.empty(len(ids), np.int64), []
        for j, g in enumerate(ids.tolist()):
            image, labels[j], damage = self._reader.sample_id(g)
            if image is None:
                damaged.append(damage)
                windows[j * per : (j + 1) * per] = 0
                continue
            for k in range(j * per, (j + 1) * per):
                window = crop_window(image, int(x[k]), int(y[k]), bool(flip[k]))
                windows[k] = window if self.channels_last else np.moveaxis(window, -1, -3)
        return b, out, torch.from_numpy(labels), damaged


# forkserver_freeze last: it freezes what the others created (see its docstring).
_PRELOAD = ["pipeline.forkserver_signals", "numpy", "torch", "PIL.Image", "pipeline.reference",
            "pipeline.forkserver_freeze"]


def worker_context():
    """forkserver, with the heavy imports done once in the server: DALI's threads may hold
    locks at fork time, so plain fork is unsafe, and spawn would import torch per worker.
    The server's socket goes in a temp folder named for this rank, and the folders that
    killed ranks left are removed first (`common/mptemp.py`)."""
    mptemp.sweep()
    mptemp.claim()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class ReferenceLoader(BaseLoader):
    """webdataset-format shards, Pillow and torch workers; see `pipeline.make_loader`."""

    backend = "reference"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.index.table  # noqa: B018 -- checked and mapped (or parsed into shared memory) before any worker starts
        self.batches = EpochBatches(self.index, cfg.batch_size)
        self.maker = BatchMaker(self.index, cfg.mode, cfg.batch_size, cfg.seed, cfg.rank, cfg.lighting_std,
                                cfg.channels_last, self.num_classes)
        self.normalizer = HostNormalizer(mean_array(self.stats, cfg.mean), cfg.channels_last)
        self.matrix = lighting_matrix(self.stats)
        self._loader: DataLoader | None = None

    def params(self, b: int):
        """The random parameters of batch b of the current epoch."""
        return self.maker.params(self.epoch, b)

    def data_loader(self) -> DataLoader:
        """One DataLoader for the loader's life: its workers persist across epochs."""
        if self._loader is None:
            self._loader = DataLoader(
                self.maker,
                batch_size=None,
                sampler=self.batches,
                num_workers=self.cfg.num_workers,
                persistent_workers=True,
                pin_memory=self.device.type == "cuda",
                multiprocessing_context=worker_context(),
            )
        return self._loader

    def close(self) -> None:
        """Stop the workers now rather than when the loader is collected."""
        loader, self._loader = self._loader, None
        if loader is not None and loader._iterator is not None:
            loader._iterator._shutdown_workers()

    def _iterate(self, start: int):
        self._take_resume_checkpoint(start)  # the position alone is enough here
        plan = self.plan()
        positions = self.epoch_positions(plan)
        self.batches.set_epoch(self.epoch, plan, positions, start)
        for b, windows, labels, damaged in self.data_loader():
            for name, why in damaged:
                self.report_damaged(name, why)
            images = self.float_batch(windows, b)
            yield b, self.finish(images.to(self.device, non_blocking=True), labels, plan, b)

    def float_batch(self, windows: torch.Tensor, b: int) -> torch.Tensor:
        """The workers' uint8 windows of batch b -> the float batch: the mean under each window
        and the lighting offset, by the step DALI's CPU graph ends with (bit-identical to
        `pipeline.augment.augment_image` for the same pixels)."""
        flat = windows.reshape(-1, *windows.shape[-3:])
        x, y, flip, alpha = self.maker.crops(self.epoch, b, len(windows))
        params = {"x": x, "y": y, "flip": flip, "offset": lighting_offset(alpha, self.matrix)}
        pin = self.device.type == "cuda"  # pinned, so that the copy to the device is queued, not waited for
        return self.normalizer(flat, params, self._transfer_dtype, pin=pin).reshape(windows.shape)
