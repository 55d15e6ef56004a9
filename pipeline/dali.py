"""The DALI backend: webdataset shards -> decoded, augmented batches on the training device.

`trainer train` / `trainer evaluate` get it from `pipeline.make_loader(backend="dali")`.
One graph serves CPU (`device_id=None`, CPU decode) and GPU (`mixed` decode, GPU
arithmetic): only the placement differs, except that in train mode on the CPU the graph
stops at the mirrored uint8 windows and `pipeline.host_normalize` does the float step.
A rank builds one pipeline for the run. Its JPEGs come from `pipeline.dalisource` (a
batch-mode `fn.external_source` reading a batch through the split's offsets table into
one buffer, in the reference loader's order), with the batch's labels parsed at once and,
in train mode, its crop offsets, flips and lighting offsets drawn once, the reference
loader's draw; each epoch start writes the epoch's schedule and resets the pipeline.
The pipeline runs in the loader's producer thread (`pipeline.prefetch`), which also makes
the batch's tensors on their device, PREFETCH_BATCHES ahead: the trainer's `next()` takes
a finished batch. A pass broken off before its end stops the thread, is cut short and
keeps the pipeline; it is rebuilt only after a batch failed on a damaged JPEG
(`pipeline/badinput.py` finds it, and the rebuilt pipeline's source replaces it).
Mid-epoch resume needs no DALI checkpoint: the schedule starts at the batch.
`last_params` holds the parameters of the batch last handed out, which is what lets the
tests check them against the reference.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from pipeline import badinput, prefetch
from pipeline.augment import MAX_OFFSET, TEN_CROPS, lighting_matrix, mean_array
from pipeline.badinput import DaliRecovery
from pipeline.base import DAMAGED, BaseLoader, bad_label
from pipeline.dalisource import BatchParams, BatchSource, Schedule, blank_jpeg
from pipeline.host_normalize import HostNormalizer
from pipeline.hostmem import empty_host, return_large_frees
from pipeline.samplebytes import SampleBytes
from preprocess.contract import CROP_SIZE, DataError

log = logging.getLogger(__name__)
PARAM_TYPES = {"x": types.INT32, "y": types.INT32, "flip": types.INT32, "offset": types.FLOAT}
# Share of the JPEGs the mixed decoder sends to the GPU's hardware JPEG engine (A100/H100);
# the rest are Huffman-decoded on the pipeline's CPU threads. 0.65, DALI's own default, was
# the best of the settings timed together on an H100 (benchmarks/README.md, GPU check): at
# batch 256 and 8 threads 23,235 images/s, against 20,975 at 0.9 and 16,804 at 1.0. DALI's
# maintainers saw the same trade: 0.9 gained 1.8% end to end with a worse p99 (NVIDIA/DALI#6366).
# That was the pipeline alone; the GPU check's `fed_levers` times 0.65 / 0.9 / 1.0 under
# training (issue 25), where the decoder's GPU share competes with the step: not yet run.
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


def read_nodes(source: BatchSource, cut: bool = False) -> dict:
    """The graph's inputs, from the one batch source: each sample's JPEG ("jpg") and, in
    train mode, the batch's parameters by their names in `source.params.outputs`.

    The JPEGs come as one dense array, a row a sample from its JPEG's first byte: a list of
    one array a sample cost the rank ~2 us a sample in DALI's Python feed checks. The CPU
    decoder reads a row as it is (it stops at the JPEG's end marker; the bytes after it,
    zeros after a damaged one, are never read: the CPU equivalence and bad-input tests
    hold bit for bit); `cut` slices each row to its JPEG's length first, in DALI's threads, for the
    GPU decoder until the GPU check shows it equal on whole rows (the slice cost ~3x the
    feed's wall time on the 2-core VM)."""
    source.cut = cut
    names = ("rows", *(("lengths",) if cut else ()), *(source.params.outputs if source.params is not None else ()))
    # no_copy: DALI reads the batch's buffer in place; the source keeps each batch's arrays
    # (`held`, and the buffers it reuses) until DALI has consumed them.
    outs = fn.external_source(source=source, num_outputs=len(names), batch=True, batch_info=True, no_copy=True,
                              dtype=[types.UINT8] + [types.INT32] * cut + [PARAM_TYPES[k] for k in names[1 + cut :]])
    nodes = dict(zip(names, outs))
    rows = nodes.pop("rows")
    nodes["jpg"] = fn.slice(rows, start=[0], shape=nodes.pop("lengths"), axes=[0]) if cut else rows
    return nodes


def define_graph(loader: DaliLoader, source: BatchSource):
    """The DALI graph for the loader's mode; returns its one output DataNode, the images
    (the labels come from the source, `BatchSource.taken`)."""
    cfg = loader.cfg
    gpu = loader.device_id is not None
    train = cfg.mode == "train"
    nodes = read_nodes(source, cut=gpu)
    jpg = nodes["jpg"]
    decoder = "mixed" if gpu else "cpu"
    hw = {"hw_decoder_load": HW_DECODER_LOAD} if gpu else {}
    mean_np = mean_array(loader.stats, cfg.mean)
    mean = types.Constant(mean_np, device="gpu" if gpu else "cpu")
    layout = "HWC" if cfg.channels_last else "CHW"
    dtype = types.FLOAT16 if cfg.dtype == torch.float16 else types.FLOAT
    if train:
        x, y, flip = nodes["x"], nodes["y"], nodes["flip"]
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
            return image
        mean = fn.crop_mirror_normalize(fn.reshape(mean, layout="HWC"), mirror=flip, mean=nodes["offset"],
                                        output_layout=layout, dtype=types.FLOAT,
                                        **(window if mean_np.shape[0] > 1 else {}))  # fmt: skip
        flipped = image - mean
        if dtype != types.FLOAT:
            flipped = fn.cast(flipped, dtype=dtype)
        return flipped
    image = fn.decoders.image(jpg, device=decoder, output_type=types.RGB, **hw)
    centered = image - mean
    if cfg.mode == "center":
        c = MAX_OFFSET // 2
        return _crop(centered, c, c, 0, layout, dtype)
    crops = [_crop(centered, x, y, int(f), layout, dtype) for x, y, f in TEN_CROPS]
    return fn.stack(*crops, axis=0)


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


# Batches DALI can have asked its source for beyond those taken: the pipeline's prefetch
# queue (PREFETCH_QUEUE_DEPTH), with room to spare. A broken-off epoch is cut after them
# (`DaliLoader._cut_short`).
IN_FLIGHT = 8
PREFETCH_QUEUE_DEPTH = 2  # DALI's own: batches its executor runs ahead of run()
# Batches the loader's producer thread (pipeline.prefetch) makes ahead of the trainer's
# next(): one hides a batch's gather, label parse, draw and copy behind a step, and each
# costs a batch of memory on the loader's device. 0: each made in next() itself (the
# loader before the thread).
PREFETCH_BATCHES = 1


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
        index = self.index
        self.samples = SampleBytes(index.tars, index.starts, index.table)  # the table checked and mapped here
        self.schedule = Schedule(index, cfg.batch_size)
        self.recovery = DaliRecovery(self.samples, self.device_id)
        self.damaged: set[int] = set()  # global numbers of samples whose JPEG does not decode
        self.pipe: Pipeline | None = None
        self._generation = 0  # pipelines built: names the schedule files of the live one
        self._dali_epoch = 0  # the live pipeline's epoch index (its reset() count)
        self._ended = False  # the live pipeline's epoch was read to its end: reset() starts the next
        self._runs = 0  # batches taken from the live pipeline in its current epoch
        self._ids = np.zeros(0, np.int64)  # the current epoch's sample numbers, batch after batch
        self._blank = blank_jpeg()
        self._source: BatchSource | None = None  # the live pipeline's
        self._feed: prefetch.Prefetch | None = None  # the open pass's producer thread
        self.last_params: dict | None = None
        self._matrix = lighting_matrix(self.stats)
        self._host_normalize = None  # the CPU train graph ends with uint8 windows
        if cfg.mode == "train" and self.device_id is None:
            self._host_normalize = HostNormalizer(mean_array(self.stats, cfg.mean), cfg.channels_last)

    def epoch_ids(self, plan) -> np.ndarray:
        """The epoch's global sample numbers, batch after batch: the reference loader's order."""
        return self.index.global_id(*plan.locate(self.epoch_positions(plan)))

    def source(self, params: BatchParams | None = None) -> BatchSource:
        """The batch source of the pipeline being built (its generation's schedules)."""
        c = self.cfg
        return BatchSource(self.schedule.folder, self._generation, self.samples, c.batch_size,
                           frozenset(self.damaged), self._blank, self.num_classes, params or self.batch_params())

    def batch_params(self) -> BatchParams | None:
        """Train mode's draw of crop offsets, flips and lighting offsets."""
        c = self.cfg
        if c.mode != "train":
            return None
        outputs = ("x", "y", "flip") if self.device_id is None else ("x", "y", "flip", "offset")
        return BatchParams(c.batch_size, c.seed, c.rank, c.lighting_std, self._matrix, outputs)

    def pipeline(self) -> Pipeline:
        """A pipeline for the loader, defined but not built (building it needs its device)."""
        cfg = self.cfg
        pipe = Pipeline(
            batch_size=cfg.batch_size,
            num_threads=cfg.num_workers,
            device_id=self.device_id,
            seed=self.epoch_seed(plan_salt=2),
            prefetch_queue_depth=PREFETCH_QUEUE_DEPTH,
        )
        self._source = self.source()
        with pipe:
            pipe.set_outputs(define_graph(self, self._source))
        return pipe

    def build(self) -> Pipeline:
        pipe = self.pipeline()
        pipe.build()
        return pipe

    def release(self) -> None:
        """Drop the pipeline before another is built. DALI frees
        a pipeline's decoder and buffers (GPU memory, on a GPU) only when the object dies,
        and the loader keeps no other reference: two at once may not fit."""
        pipe, self.pipe = self.pipe, None
        del pipe

    def close(self) -> None:
        """Stop the producer thread and the pipeline now rather than when collected."""
        self._stop_feed()
        self.release()

    def _stop_feed(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()
            if self._feed is feed:
                self._feed = None

    def _iterate(self, start: int):
        self._take_resume_checkpoint(start)  # the position alone is enough here
        plan = self.plan()
        if start >= plan.num_batches:
            return
        self._ids = self.epoch_ids(plan)
        self._start(start)
        last = plan.num_batches - 1

        def make(b: int):
            batch = self._batch(self._run(b), plan, b)
            if b == last:  # before the last yield: the trainer takes len(loader) batches and never resumes us
                self._end_epoch()
            return batch

        feed = self._feed = prefetch.Prefetch(make, range(start, plan.num_batches), PREFETCH_BATCHES, self.device)
        try:
            for b, (batch, params) in feed:
                self.last_params = params
                yield b, batch
        finally:  # the pass ended, was broken off or collected: the thread ends before the rank goes on
            feed.close()

    def _start(self, start: int) -> None:
        """The pipeline positioned before batch `start` of the current epoch: the live one
        reset to its next epoch (its last one cut short first where it was broken off),
        else a new one."""
        self._stop_feed()  # a pass still open (an iterator not yet collected) lets go of the pipeline
        if self.pipe is not None and not self._ended:
            self._cut_short()
        if self.pipe is not None and self._ended:
            self._dali_epoch += 1
            self._write_schedule(start)
            self._source.taken.clear()  # what the cut-short epoch's source kept
            self.pipe.reset()
        else:
            self._rebuild(start)
        self._ended = False
        self._runs = 0

    def _cut_short(self) -> None:
        """End the live pipeline's broken-off epoch after the batches DALI can already have
        asked its source for (its prefetch queues: IN_FLIGHT at most), taking those. Where
        that fails, the pipeline is dropped and the caller builds another."""
        try:
            self.schedule.cut(self._generation, self._dali_epoch, self._runs + IN_FLIGHT)
            for _ in range(IN_FLIGHT + 1):
                self.pipe.run()
        except StopIteration:
            self._ended = True
            return
        except RuntimeError as err:  # e.g. a damaged JPEG in a batch nobody will read
            log.info("the broken-off epoch's pipeline did not end cleanly (%s): rebuilding", err)
        self.release()

    def _rebuild(self, start: int) -> None:
        self.release()
        self._generation += 1
        self._dali_epoch = 0
        self._write_schedule(start)
        self.pipe = self.build()

    def _write_schedule(self, start: int) -> None:
        b = self.cfg.batch_size
        self.schedule.write(self._generation, self._dali_epoch, self.epoch, start, self._ids[start * b :])

    def _end_epoch(self) -> None:
        """Take the pipeline's end of epoch, so that the next epoch can reset it."""
        try:
            self.pipe.run()
        except StopIteration:
            self._ended = True
            return
        raise DataError("DALI's source gave more batches than the epoch has")  # a bug, not bad data

    def _run(self, b: int):
        """The outputs of batch `b`, repairing damaged samples as often as needed."""
        for _ in range(badinput.MAX_FAILURES_PER_BATCH):
            try:
                outs = self.pipe.run()
                self._runs += 1
                return outs
            except RuntimeError as err:
                self.release()  # rebuilt below; the recovery's decoder needs the room
                size = self.cfg.batch_size
                for g, name in self.recovery.repair(self._ids[b * size : (b + 1) * size], self.damaged,
                                                    self.epoch, b, err):
                    self.damaged.add(g)
                    if name not in self.skipped:
                        self.skipped.append(name)
                self._rebuild(b)
        raise DataError(f"batch {b} kept failing after {badinput.MAX_FAILURES_PER_BATCH} repairs")

    def _labels(self, labels: np.ndarray, b: int) -> torch.Tensor:
        """The batch's labels as the source parsed them; a label that is not a class number
        made its row DAMAGED, and is reported by name unless recovery already did (its JPEG
        was the damaged part)."""
        ids = self._ids[b * self.cfg.batch_size :]
        for j in np.flatnonzero(labels == DAMAGED):
            g = int(ids[j])
            name = self.samples.name(g)
            if name not in self.skipped:
                symptom = bad_label(np.frombuffer(self.samples.label_bytes(g), np.uint8))
                self.report_damaged(name, self.samples.damage(g, symptom))
        return torch.from_numpy(labels)

    def _batch(self, outs, plan, b: int):
        """Batch b's tensors and parameters, from the pipeline's outputs and what its source
        kept for b (its labels and draw)."""
        pipe = self.pipe
        zero_copy = bool(pipe and pipe.exec_dynamic)
        raw_labels, params = self._source.taken.pop(b)
        labels = self._labels(raw_labels, b)
        if self._host_normalize is not None:
            windows = to_torch(outs[0], torch.uint8, self.device, zero_copy=zero_copy)
            images = self._host_normalize(windows, params, self._transfer_dtype)
        else:
            images = to_torch(outs[0], self._transfer_dtype, self.device, zero_copy=zero_copy)
        return self.finish(images, labels, plan, b), params
