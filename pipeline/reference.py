"""The reference backend: Pillow decode and numpy augmentation under torch's DataLoader.

`pipeline.make_loader(backend="reference")` returns it: the fallback where DALI is not
installed, and the baseline in `benchmarks/pipeline_bench.py`. It reads the same
per-rank sample ranges as DALI (`pipeline/sharding.py`), each sample by its offset in
the shard's DALI index, and applies the augmentation of `pipeline/augment.py`. Within
a rank, batch start+k goes to DataLoader worker k % num_workers, and its random parameters
are drawn from (seed, epoch, rank, b): the output does not depend on the number of
workers, and resuming at batch k is exact and costs nothing.
"""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import os
import select
import threading

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.augment import (
    TEN_CROPS,
    augment_image,
    center_params,
    draw_train_params,
    lighting_matrix,
    lighting_offset,
    mean_array,
)
from pipeline.loader import DAMAGED, BaseLoader, parse_label
from pipeline.sharding import EpochPlan, ShardIndex, derive_seed
from preprocess.contract import CROP_SIZE, EXT_IMAGE, EXT_LABEL, IMAGE_SIZE, DataError

log = logging.getLogger(__name__)


class ShardReader:
    """Random access to samples through the DALI index; one per worker process."""

    def __init__(self, shards: list[ShardIndex]):
        self.shards = shards
        self._fds: dict[int, int] = {}

    def raw(self, s: int, i: int, ext: str) -> bytes:
        offset, size, _ = self.shards[s].component(i, ext)
        if s not in self._fds:
            self._fds[s] = os.open(self.shards[s].tar, os.O_RDONLY)
        return os.pread(self._fds[s], size, offset)

    def sample(self, s: int, i: int) -> tuple[np.ndarray | None, int, str]:
        """(uint8 HWC image or None if it does not decode, label, "shard:key")."""
        name = f"{self.shards[s].tar.name}:{self.shards[s].component(i, EXT_IMAGE)[2].split('.', 1)[0]}"
        label = parse_label(np.frombuffer(self.raw(s, i, EXT_LABEL), np.uint8))
        try:
            with Image.open(io.BytesIO(self.raw(s, i, EXT_IMAGE))) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError):
            return None, DAMAGED, name
        if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DataError(f"{name} is {image.shape}, the contract says 256x256 RGB: re-run `preprocess shard`")
        return image, label, name

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def rank_positions(plan: EpochPlan, batch_size: int, train: bool, seed: int) -> np.ndarray:
    """Epoch-sequence positions this rank reads, batch after batch (eval: padded by repeating
    the last sample, as DALI's pad_last_batch does; those rows are masked by position)."""
    local = np.arange(plan.size)
    if train:
        local = np.random.default_rng(seed).permutation(plan.size)[: plan.num_batches * batch_size]
    else:
        pad = plan.num_batches * batch_size - plan.size
        local = np.concatenate([local, np.full(pad, plan.size - 1)])
    return plan.start + local


class EpochDataset(IterableDataset):
    """One rank's epoch from batch `start` on; worker w makes batches b = w mod workers."""

    def __init__(self, loader: "ReferenceLoader", plan: EpochPlan, start: int):
        cfg = loader.cfg
        self.cfg, self.plan, self.start, self.epoch = cfg, plan, start, loader.epoch
        self.shards = loader.shards
        self.positions = rank_positions(plan, cfg.batch_size, cfg.mode == "train", loader.epoch_seed(3))
        self.mean = mean_array(loader.stats, cfg.mean)
        self.matrix = lighting_matrix(loader.stats)

    def params(self, b: int):
        c = self.cfg
        if c.mode != "train":
            return center_params(c.batch_size)
        rng = np.random.default_rng(derive_seed(c.seed, self.epoch, c.rank, b, 4))
        return draw_train_params(rng, c.batch_size, c.lighting_std)

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = ShardReader(self.shards)
        try:  # DataLoader takes from workers round-robin, so worker w makes start + w + k*n
            for b in range(self.start + w, self.plan.num_batches, n):
                yield b, *self.batch(reader, b)
        finally:
            reader.close()

    def batch(self, reader: ShardReader, b: int):
        c = self.cfg
        rows = self.positions[b * c.batch_size : (b + 1) * c.batch_size]
        p = self.params(b)
        offsets = lighting_offset(p.alpha, self.matrix)
        shape = (10, CROP_SIZE, CROP_SIZE, 3) if c.mode == "tencrop" else (CROP_SIZE, CROP_SIZE, 3)
        images = np.zeros((len(rows), *shape), np.float32)
        labels, damaged = np.empty(len(rows), np.int64), []
        for j, pos in enumerate(rows):
            image, labels[j], name = reader.sample(*self.plan.locate(self.shards, int(pos)))
            if image is None:
                damaged.append(name)
            elif c.mode == "tencrop":
                images[j] = np.stack([augment_image(image, self.mean, x, y, f) for x, y, f in TEN_CROPS])
            else:
                images[j] = augment_image(image, self.mean, p.x[j], p.y[j], p.flip[j], offsets[j])
        out = torch.from_numpy(images)
        if not c.channels_last:
            out = out.movedim(-1, -3).contiguous()
        return out.to(torch.float16) if c.dtype == torch.float16 else out, torch.from_numpy(labels), damaged


_PRELOAD = ["pipeline.forkserver_signals", "numpy", "torch", "PIL.Image", "pipeline.reference"]


def exit_with(trainer_pid: int, worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: end this worker when the trainer process ends.

    A forkserver's worker is the forkserver's child, not the trainer's, so neither
    DataLoader's own watchdog (it watches the worker's parent) nor the kernel notices a
    trainer killed with SIGKILL (an OOM kill, `kill -9`): the worker would wait for work
    forever, and keep the forkserver alive with it. A thread waits on the trainer's pidfd."""

    def watch():
        try:
            fd = os.pidfd_open(trainer_pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): poll once a second
            while True:
                try:
                    os.kill(trainer_pid, 0)
                except ProcessLookupError:
                    os._exit(0)
                threading.Event().wait(1.0)
        select.select([fd], [], [])  # readable once the process has exited
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-trainer", daemon=True).start()


def worker_context():
    """forkserver, with the heavy imports done once in the server: DALI's threads may hold
    locks at fork time, so plain fork is unsafe, and spawn would import torch per worker."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class ReferenceLoader(BaseLoader):
    """webdataset-format shards, Pillow and torch workers; see `pipeline.make_loader`."""

    backend = "reference"

    def dataset(self, start: int = 0) -> EpochDataset:
        return EpochDataset(self, self.plan(), start)

    def _iterate(self, start: int):
        self._take_resume_checkpoint(start)  # the position alone is enough here
        plan = self.plan()
        loader = DataLoader(
            self.dataset(start),
            batch_size=None,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            multiprocessing_context=worker_context(),
            worker_init_fn=functools.partial(exit_with, os.getpid()),
        )
        for b, images, labels, damaged in loader:
            for name in damaged:
                log.warning("damaged JPEG %s: skipped", name)
                if name not in self.skipped:
                    self.skipped.append(name)
            yield b, self.finish(images.to(self.device, non_blocking=True), labels, plan, b)
