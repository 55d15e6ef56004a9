"""The DALI backend: webdataset shards -> decoded, augmented batches on the training device.

`trainer train` / `trainer evaluate` get it from `pipeline.make_loader(backend="dali")`.
One graph serves CPU (`device_id=None`, CPU decode) and GPU (`mixed` decode, GPU
arithmetic): only the placement differs, except that in train mode on the CPU the graph
stops at the mirrored uint8 windows and `pipeline.host_normalize` does the float step.
In train mode a pipeline is built per epoch, its reader and random-op seeds derived from
(seed, epoch, rank), so epoch e is reproducible without running epochs 0..e-1; its reader
gets only the rank's shards of that epoch (`pipeline/dalireader.py`), a new random 1/w of
the split each epoch, so a build parses 1/w of the split's index, and the previous epoch's
pipeline is gone before the next is built (one alive at a time), its buffers returned to
the system (`pipeline.hostmem.return_large_frees`). An eval loader reads the same samples
in the same order every epoch: its pipeline is built once and reused while nothing it
reads changes.
Why not one pipeline for the run: the reader takes its files at build time, and DALI's
own per-epoch file shuffle (`shuffle_after_epoch`) draws its own permutation over the
whole split, which every rank would then parse (benchmarks/README.md, "Scale"). Mid-epoch resume restores DALI's own checkpoint
(`enable_checkpointing=True`); a failed batch is repaired by `pipeline/badinput.py`. The
random crop offsets, flips and lighting alphas are pipeline outputs too, which is what
lets the tests check them against the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from pipeline import badinput
from pipeline.augment import CROP_POSITIONS, MAX_OFFSET, TEN_CROPS, lighting_matrix, mean_array
from pipeline.badinput import DaliRecovery
from pipeline.base import DAMAGED, BaseLoader, bad_label, parse_label
from pipeline.dalireader import RankReader
from pipeline.host_normalize import HostNormalizer
from pipeline.hostmem import empty_host, return_large_frees
from preprocess.contract import CROP_SIZE, DataError
TRAIN_OUTPUTS = ("images", "labels", "x", "y", "flip", "alpha", "offset")
# Share of the JPEGs the mixed decoder sends to the GPU's hardware JPEG engine (A100/H100);
# the rest are Huffman-decoded on the pipeline's CPU threads. 0.65, DALI's own default, was
# the best of the settings timed together on an H100 (benchmarks/README.md, GPU check): at
# batch 256 and 8 threads 23,235 images/s, against 20,975 at 0.9 and 16,804 at 1.0. DALI's
# maintainers saw the same trade: 0.9 gained 1.8% end to end with a worse p99 (NVIDIA/DALI#6366).
HW_DECODER_LOAD = 0.65


def dali_device_id(device: str) -> int | None:
    """DALI's `device_id` for a loader device: None on the CPU, k for "cuda:k", and for a
    bare "cuda" the current device, as torch reads it (so a rank that called
    `torch.cuda.set_device(k)` decodes on GPU k, not on GPU 0)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"the DALI loader runs on the CPU or a CUDA device, not {device!r}")
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _crop(centered, x, y, flip, layout: str, dtype):
    # x / 32 is exact in binary, so DALI's anchor crop_pos * (256 - 224) is exactly x.
    return fn.crop_mirror_normalize(
        centered,
        crop=(CROP_SIZE, CROP_SIZE),
        crop_pos_x=x * (1.0 / MAX_OFFSET),
        crop_pos_y=y * (1.0 / MAX_OFFSET),
        mirror=flip,
        output_layout=layout,
        dtype=dtype,
    )


def random_train_params(lighting_std: float):
    """Per-sample crop offsets x, y (uniform on 0..32), flip (p = 0.5), alpha ~ N(0, std)^3."""
    x = fn.random.uniform(values=list(range(CROP_POSITIONS)), dtype=types.INT32)
    y = fn.random.uniform(values=list(range(CROP_POSITIONS)), dtype=types.INT32)
    flip = fn.random.coin_flip(probability=0.5, dtype=types.INT32)
    alpha = fn.random.normal(shape=[3], stddev=lighting_std)
    return x, y, flip, alpha


def define_graph(loader: DaliLoader, reader: dict):
    """The DALI graph for the loader's mode; returns the output DataNodes."""
    cfg = loader.cfg
    gpu = loader.device_id is not None
    jpg, cls = fn.readers.webdataset(**reader)
    decoder = "mixed" if gpu else "cpu"
    hw = {"hw_decoder_load": HW_DECODER_LOAD} if gpu else {}
    mean_np = mean_array(loader.stats, cfg.mean)
    mean = types.Constant(mean_np, device="gpu" if gpu else "cpu")
    layout = "HWC" if cfg.channels_last else "CHW"
    dtype = types.FLOAT16 if cfg.dtype == torch.float16 else types.FLOAT
    if cfg.mode == "train":
        x, y, flip, alpha = random_train_params(cfg.lighting_std)
        matrix = lighting_matrix(loader.stats).astype(np.float32).ravel().tolist()
        offset = fn.reshape(fn.coord_transform(fn.reshape(alpha, shape=[1, 3]), M=matrix), shape=[3])
        # Crop and flip first, then one float pass: decode only the 224x224 window (ROI
        # decode), mirror/transpose it as uint8, and take the mean image at the same window
        # and mirror with the lighting offset folded in by crop_mirror_normalize (its
        # per-channel `mean`): out = image - (mean - offset), within float32 rounding of
        # (image - mean) + offset on the whole image (DECODER_BOUND in the tests).
        pos_x, pos_y = x * (1.0 / MAX_OFFSET), y * (1.0 / MAX_OFFSET)  # exact: anchor = x
        window = dict(crop=(CROP_SIZE, CROP_SIZE), crop_pos_x=pos_x, crop_pos_y=pos_y)
        image = fn.decoders.image_crop(jpg, device=decoder, output_type=types.RGB, **window, **hw)
        # Mirror and lay out in one uint8 pass (identity normalisation: exact for uint8).
        image = fn.crop_mirror_normalize(image, mirror=flip, output_layout=layout, dtype=types.UINT8)
        if not gpu:
            # On the CPU the float step is faster per sample in torch (pipeline.host_normalize).
            return image, cls, x, y, flip, alpha, offset
        mean = fn.crop_mirror_normalize(fn.reshape(mean, layout="HWC"), mirror=flip, mean=offset,
                                        output_layout=layout, dtype=types.FLOAT,
                                        **(window if mean_np.shape[0] > 1 else {}))  # fmt: skip
        flipped = image - mean
        if dtype != types.FLOAT:
            flipped = fn.cast(flipped, dtype=dtype)
        return flipped, cls, x, y, flip, alpha, offset
    image = fn.decoders.image(jpg, device=decoder, output_type=types.RGB, **hw)
    centered = image - mean
    if cfg.mode == "center":
        c = MAX_OFFSET // 2
        return _crop(centered, c, c, 0, layout, dtype), cls
    crops = [_crop(centered, x, y, int(f), layout, dtype) for x, y, f in TEN_CROPS]
    return fn.stack(*crops, axis=0), cls


def to_torch(tensor_list, dtype: torch.dtype, device: torch.device, zero_copy: bool = False) -> torch.Tensor:
    """A dense DALI batch as a torch tensor on `device`.

    `zero_copy` (CPU only, and only for a pipeline on DALI's dynamic executor, whose outputs
    are reference-counted rather than recycled): torch takes the batch's own buffer through
    DLPack and keeps it alive, as DALI's own PyTorch iterator does. Copying the 77 MB batch
    instead was a quarter of the CPU pipeline's time. Otherwise the batch is copied, since
    DALI reuses its buffers.
    """
    dense = tensor_list.as_tensor()
    if zero_copy and device.type == "cpu":
        out = torch.from_dlpack(dense)
        return out if out.dtype == dtype else out.to(dtype)
    if device.type == "cpu":
        out = empty_host(dense.shape(), dtype)
    else:
        out = torch.empty(dense.shape(), dtype=dtype, device=device)
    stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    feed_ndarray(dense, out, cuda_stream=stream)
    return out


class DaliLoader(BaseLoader):
    """DALI-backed loader; see `pipeline.make_loader` for the interface."""

    backend = "dali"

    def __init__(self, cfg):
        super().__init__(cfg)
        return_large_frees()  # a dropped pipeline's buffers leave the rank (pipeline.hostmem)
        # One GPU for everything: DALI's decoder, the copy's stream, recovery's test decodes.
        # Resolved once, so that a bare "cuda" cannot mean two devices over the loader's life.
        self.device_id = dali_device_id(cfg.device)
        if self.device_id is not None:
            self.device = torch.device("cuda", self.device_id)
        self.reader = RankReader(self.index)
        self.recovery = DaliRecovery(self.reader, cfg.batch_size, self.device_id)
        self.pipe: Pipeline | None = None
        self._live: tuple | None = None  # what an eval pipeline reads, while it may be reused (`_reusable`)
        self._runs = 0  # batches the live pipeline produced
        self._checkpoint: tuple[int, bytes | None] = (0, None)  # (batch, DALI state before it)
        self._host_normalize = None  # the CPU train graph ends with uint8 windows
        if cfg.mode == "train" and self.device_id is None:
            self._host_normalize = HostNormalizer(mean_array(self.stats, cfg.mean), cfg.channels_last)

    def reader_kwargs(self, plan) -> dict:
        return self.reader.kwargs(plan, self.epoch_seed(plan_salt=1), train=self.cfg.mode == "train")

    def pipeline(self, plan, checkpoint: str | None = None) -> Pipeline:
        """The epoch's pipeline, defined but not built (building it needs its device)."""
        cfg = self.cfg
        pipe = Pipeline(
            batch_size=cfg.batch_size,
            num_threads=cfg.num_workers,
            device_id=self.device_id,
            seed=self.epoch_seed(plan_salt=2),
            prefetch_queue_depth=2,
            enable_checkpointing=True,
            checkpoint=checkpoint,
        )
        with pipe:
            pipe.set_outputs(*define_graph(self, self.reader_kwargs(plan)))
        return pipe

    def build(self, plan, checkpoint: str | None = None) -> Pipeline:
        pipe = self.pipeline(plan, checkpoint)
        pipe.build()
        return pipe

    def release(self) -> None:
        """Drop the pipeline before another is built. DALI frees a pipeline's decoder and
        buffers (GPU memory, on a GPU) only when the object dies, and the loader keeps no
        other reference: two at once, at an epoch start or a rebuild, may not fit."""
        pipe, self.pipe = self.pipe, None
        del pipe

    def _iterate(self, start: int):
        plan = self.plan()
        self._start(plan, start, self._take_resume_checkpoint(start))
        for b in range(start, plan.num_batches):
            yield b, self._batch(self._run(plan, b), plan, b)

    def _reads(self, plan) -> tuple:
        """What a pipeline built for `plan` reads: the rank's shards, range and patched samples."""
        patched = tuple(sorted((s, i) for s, samples in self.reader.patches.items() for i in samples))
        return tuple(plan.shard_order), plan.start, plan.size, patched

    def _reusable(self, plan, start: int, checkpoint: str | None) -> bool:
        """Whether the live pipeline can serve this epoch as it is: an eval pipeline (no random
        operators, the same samples in the same order every epoch) whose last epoch ran to
        its end, so that its reader has wrapped to the same epoch's start. A validation
        pass then rebuilds and re-parses nothing (the reader's shards have not changed)."""
        return (self.cfg.mode != "train" and self.pipe is not None and start == 0 and checkpoint is None
                and self._live == self._reads(plan) and self._runs % plan.num_batches == 0)

    def _start(self, plan, start: int, checkpoint: str | None) -> None:
        """The epoch's pipeline positioned before batch `start`: built, or the live one reused."""
        self._checkpoint = (start if checkpoint is not None else 0, checkpoint)
        if self._reusable(plan, start, checkpoint):
            return
        self.release()
        self.pipe = self.build(plan, checkpoint)
        self._live, self._runs = self._reads(plan), 0
        if checkpoint is None:
            for b in range(start):  # no DALI checkpoint: deterministic replay
                self._run(plan, b)

    def _run(self, plan, b: int):
        """The outputs of batch `b`, repairing damaged samples as often as needed."""
        for _ in range(badinput.MAX_FAILURES_PER_BATCH):
            try:
                outs = self.pipe.run()
            except RuntimeError as err:
                self.release()  # rebuilt below; the probe's decoder needs the room
                for name in self.recovery.repair(self.reader_kwargs(plan), self.epoch, b, self._checkpoint, err):
                    if name not in self.skipped:
                        self.skipped.append(name)
                self._rebuild(plan, b)
                continue
            self._runs += 1
            if (b + 1) % badinput.CHECKPOINT_EVERY == 0:
                self._checkpoint = (b + 1, self.pipe.checkpoint())
            return outs
        raise DataError(f"batch {b} kept failing after {badinput.MAX_FAILURES_PER_BATCH} repairs")

    def _rebuild(self, plan, b: int) -> None:
        at, checkpoint = self._checkpoint
        self.release()
        self.pipe = self.build(plan, checkpoint)
        self._live = None  # positioned by a checkpoint and a replay: not reused at the next epoch
        for _ in range(at, b):  # these batches decoded before; replay restores RNG states
            self.pipe.run()

    def _extra_state(self) -> dict:
        return {"dali": self.pipe.checkpoint() if self.pipe is not None else None}

    def _labels(self, raw) -> list[int]:
        """The batch's labels; a label that is not a class number makes its row DAMAGED, and
        is reported by name unless recovery already did (its JPEG was the damaged part)."""
        labels = [parse_label(np.array(t), self.num_classes) for t in raw]
        for label, t in zip(labels, raw):
            if label == DAMAGED:
                path, _, member = t.source_info().rsplit(":", 2)
                name = f"{Path(path).name}:{member.split('.', 1)[0]}"
                if name not in self.skipped:
                    self.report_damaged(name, bad_label(np.array(t)))
        return labels

    def _batch(self, outs, plan, b: int):
        pipe = self.pipe
        zero_copy = bool(pipe and pipe.exec_dynamic)
        labels = torch.tensor(self._labels(outs[1]), dtype=torch.int64)
        self.last_params = None
        if self.cfg.mode == "train":
            self.last_params = {
                name: np.array(o.as_tensor()) for name, o in zip(TRAIN_OUTPUTS[2:], outs[2:])
            }
        if self._host_normalize is not None:
            windows = to_torch(outs[0], torch.uint8, self.device, zero_copy=zero_copy)
            images = self._host_normalize(windows, self.last_params, self._transfer_dtype)
        else:
            images = to_torch(outs[0], self._transfer_dtype, self.device, zero_copy=zero_copy)
        return self.finish(images, labels, plan, b)
