"""What the DALI backend's feed costs the rank, before and after issue 25, against DALI's reader.

    python benchmarks/dali_source_probe.py [--data SHARD_DIR] [--batch-size 128] [--threads 2]
        [--batches 40] [--repeats 3] [--py-workers 2] [--ceiling | --next-cost STEP_S]

Three feeds on the same shards, interleaved, best of `--repeats` each:
- `reader`: DALI's own webdataset reader (its file list fixed at build time);
- `before`: the DALI backend's feed until issue 25 (`dali_feed_before.py`): a parallel
  `fn.external_source` whose `--py-workers` processes read each sample, gathered by DALI
  sample by sample in the rank, then the labels parsed row by row and the parameters
  drawn a second time;
- `after`: the product's (`pipeline.dalisource.BatchSource`): the batch read into one
  dense array, a row a sample (a `preadv` a sample, the label with its JPEG), handed to
  DALI as one array, the labels parsed at once, the parameters drawn once.
Each timed as the train graph up to the uint8 windows (ROI decode, crop, mirror; what
`pipeline.dali.define_graph` runs on the CPU), or with `--ceiling` the feed alone (no
decode: each JPEG's header read by `fn.peek_image_shape`; what the rank spends handing
DALI a batch, which bounds the pipeline on a GPU,
where the decode is not the limit): images/s, and the rank thread's CPU time a batch
(`time.thread_time`; DALI's own threads not counted). The product runs all of it in the
loader's producer thread (`pipeline.prefetch`), not the trainer's. The GPU check's
`dali_external_source` step runs the first mode. `--next-cost STEP_S` times the trainer's
side instead (`next_cost`). Without --data it writes synthetic shards
as `pipeline_bench.py` does. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "pipeline"))

from nvidia.dali import fn, types  # noqa: E402
from nvidia.dali.pipeline import Pipeline  # noqa: E402

import dali_feed_before  # noqa: E402

from pipeline import make_loader  # noqa: E402
from pipeline.augment import CROP_POSITIONS, MAX_OFFSET  # noqa: E402
from pipeline.dali import HW_DECODER_LOAD, read_nodes  # noqa: E402
from pipeline.splitindex import SplitIndex  # noqa: E402
from preprocess.contract import CROP_SIZE  # noqa: E402


def windows_graph(jpg, x, y, flip, device_id: int | None):
    """The train graph up to the mirrored uint8 windows, as `pipeline.dali.define_graph`
    runs it (on a GPU: the `mixed` decoder with the product's hardware-decoder share)."""
    gpu = {"device": "mixed", "hw_decoder_load": HW_DECODER_LOAD} if device_id is not None else {"device": "cpu"}
    image = fn.decoders.image_crop(jpg, output_type=types.RGB, crop=(CROP_SIZE, CROP_SIZE),
                                   crop_pos_x=x * (1.0 / MAX_OFFSET), crop_pos_y=y * (1.0 / MAX_OFFSET), **gpu)
    return fn.crop_mirror_normalize(image, mirror=flip, output_layout="CHW", dtype=types.UINT8)


def outputs(jpg, x, y, flip, device_id: int | None, ceiling: bool, cls=None) -> tuple:
    if ceiling:  # the decoder's first step only (each JPEG's header): nothing copied or decoded
        shapes = fn.peek_image_shape(jpg)
        return (shapes, x, y, flip) if cls is None else (shapes, cls, x, y, flip)
    windows = windows_graph(jpg, x, y, flip, device_id)
    return (windows,) if cls is None else (windows, cls)


def reader_pipeline(data: str, batch: int, threads: int, py_workers: int, device_id: int | None,
                    ceiling: bool = False) -> Pipeline:
    """DALI's own webdataset reader over the whole split, shuffled as the DALI backend's
    reader was before it moved to the external source (a 4,096-sample buffer), with
    DALI's random ops for the crop and flip."""
    index = SplitIndex.read(data, "train")
    pipe = Pipeline(batch_size=batch, num_threads=threads, device_id=device_id, seed=1, prefetch_queue_depth=2)
    with pipe:
        jpg, cls = fn.readers.webdataset(paths=[str(t) for t in index.tars], index_paths=[str(i) for i in index.idx],
                                         ext=["jpg", "cls"], random_shuffle=True, initial_fill=4096, seed=1)
        x = fn.random.uniform(values=list(range(CROP_POSITIONS)), dtype=types.INT32)
        y = fn.random.uniform(values=list(range(CROP_POSITIONS)), dtype=types.INT32)
        flip = fn.random.coin_flip(probability=0.5, dtype=types.INT32)
        pipe.set_outputs(*outputs(jpg, x, y, flip, device_id, ceiling, cls=cls))
    pipe._probe_take = lambda outs, b: None  # as the probe always timed it: its labels left in DALI
    return pipe


def _scheduled_loader(data: str, batch: int, threads: int, device_id: int | None):
    device = "cpu" if device_id is None else f"cuda:{device_id}"
    loader = make_loader(data, backend="dali", batch_size=batch, num_workers=threads, seed=1, device=device)
    loader._ids = loader.epoch_ids(loader.plan())
    loader._write_schedule(0)
    return loader


def before_pipeline(data: str, batch: int, threads: int, py_workers: int, device_id: int | None,
                    ceiling: bool = False) -> Pipeline:
    """The DALI backend's feed before issue 25 (`dali_feed_before`), its epoch-0 schedule written."""
    loader = _scheduled_loader(data, batch, threads, device_id)
    params = replace(loader.batch_params(), outputs=("x", "y", "flip"))
    pipe = Pipeline(batch_size=batch, num_threads=threads, device_id=device_id, seed=1, prefetch_queue_depth=2,
                    py_num_workers=py_workers, py_start_method="spawn")
    with pipe:
        n = dali_feed_before.read_nodes(loader, params)
        pipe.set_outputs(*outputs(n["jpg"], n["x"], n["y"], n["flip"], device_id, ceiling, cls=n["cls"]))
    pipe._probe_loader = loader  # its schedule folder lives as long as the pipeline
    pipe._probe_take = lambda outs, b: dali_feed_before.take(outs, params, b, loader.num_classes)
    return pipe


def after_pipeline(data: str, batch: int, threads: int, py_workers: int, device_id: int | None,
                   ceiling: bool = False) -> Pipeline:
    """The product's feed (`pipeline.dali.read_nodes` over `BatchSource`), its epoch-0
    schedule written; after each run the loader's own label step (`DaliLoader._labels`)."""
    loader = _scheduled_loader(data, batch, threads, device_id)
    source = loader.source(replace(loader.batch_params(), outputs=("x", "y", "flip")))
    pipe = Pipeline(batch_size=batch, num_threads=threads, device_id=device_id, seed=1, prefetch_queue_depth=2)
    with pipe:
        n = read_nodes(source, cut=device_id is not None)
        pipe.set_outputs(*outputs(n["jpg"], n["x"], n["y"], n["flip"], device_id, ceiling))
    pipe._probe_loader = loader

    def take(outs, b):
        labels, params = source.taken.pop(b)
        return loader._labels(labels, b), params

    pipe._probe_take = take
    return pipe


FEEDS = {"reader": reader_pipeline, "before": before_pipeline, "after": after_pipeline}


def time_feed(make, data: str, batch: int, threads: int, py_workers: int, batches: int,
              device_id: int | None, ceiling: bool = False) -> tuple[float, float]:
    """(images/s, the rank thread's CPU ms a batch) over `batches` batches after 3."""
    pipe = make(data, batch, threads, py_workers, device_id, ceiling)
    pipe.build()
    for b in range(3):
        pipe._probe_take(pipe.run(), b)
    t0, c0 = time.perf_counter(), time.thread_time()
    for b in range(3, 3 + batches):
        outs = pipe.run()
        pipe._probe_take(outs, b)
    if device_id is not None:
        outs[0].as_tensor()  # the last batch is done on the device
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    del pipe
    return batches * batch / wall, 1000 * cpu / batches


def measure(data: str, batch: int, threads: int, py_workers: int, batches: int, repeats: int,
            device_id: int | None = None, ceiling: bool = False, feeds=tuple(FEEDS)) -> dict:
    """Best images/s and least rank CPU ms a batch of each feed over `repeats` interleaved
    runs, and their ratios (also the GPU check's step `dali_external_source`). `batches`
    + 3 must fit in one epoch."""
    rates = {name: 0.0 for name in feeds}
    cpu = {name: float("inf") for name in feeds}
    for _ in range(repeats):
        for name in feeds:
            r, c = time_feed(FEEDS[name], data, batch, threads, py_workers, batches, device_id, ceiling)
            rates[name], cpu[name] = max(rates[name], r), min(cpu[name], c)
    out = {f"{k}_images_per_s": round(v, 1) for k, v in rates.items()}
    out.update({f"{k}_rank_cpu_ms_per_batch": round(v, 3) for k, v in cpu.items()})
    if "after" in rates and "before" in rates:
        out["after_over_before"] = round(rates["after"] / rates["before"], 3)
        out["rank_cpu_before_over_after"] = round(cpu["before"] / cpu["after"], 3)
    if "after" in rates and "reader" in rates:
        out["after_over_reader"] = round(rates["after"] / rates["reader"], 3)
        # the GPU check's earlier name for the product's feed against the reader
        out["external_source_images_per_s"] = out["after_images_per_s"]
        out["external_source_over_reader"] = out["after_over_reader"]
    out.update(batch=batch, threads=threads, py_workers=py_workers, ceiling=ceiling)
    return out


def next_cost(data: str, batch: int, threads: int, batches: int, step_s: float) -> dict:
    """The trainer's side: mean ms in the real DALI loader's `next()` (train mode, decode
    included) when each batch is followed by a `step_s` stand-in for a training step
    (`time.sleep`, which, like a GPU step's wait, leaves the GIL), with the batches made in
    `next()` itself (PREFETCH_BATCHES 0, the loader before issue 25) and by the producer
    thread (the product's setting)."""
    import pipeline.dali as dali

    out, product = {}, dali.PREFETCH_BATCHES
    for name, depth in (("inline", 0), ("thread", product)):
        dali.PREFETCH_BATCHES = depth
        try:
            loader = make_loader(data, backend="dali", batch_size=batch, num_workers=threads, seed=1)
            it, waits = iter(loader), []
            next(it)  # the epoch start (the pipeline's build) is not a batch's cost
            for _ in range(batches):
                time.sleep(step_s)
                t0 = time.perf_counter()
                next(it)
                waits.append(time.perf_counter() - t0)
            del it
            loader.close()
        finally:
            dali.PREFETCH_BATCHES = product
        out[f"{name}_next_ms"] = round(1000 * sum(waits) / len(waits), 3)
    out["inline_over_thread"] = round(out["inline_next_ms"] / max(out["thread_next_ms"], 1e-6), 1)
    out.update(step_s=step_s, batch=batch, threads=threads)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--py-workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ceiling", action="store_true", help="time the feeds alone, without the decode")
    p.add_argument("--next-cost", type=float, metavar="STEP_S",
                   help="instead: the ms in the loader's next() with a STEP_S-second stand-in step, inline vs threaded")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dali-source-probe-") as tmp:
        data = args.data
        if data is None:
            from synthetic_shards import write_split, write_stats

            data = Path(tmp)
            train = write_split(data, "train", [256] * -(-(args.batches + 4) * args.batch_size // 256), seed=0)
            write_stats(data, train[:1024])
            del train
        if args.next_cost is not None:
            result = next_cost(str(data), args.batch_size, args.threads, args.batches, args.next_cost)
            print(f"next(): {result['inline_next_ms']} ms made inline, {result['thread_next_ms']} ms from the thread")
            print(json.dumps({"bench": "dali_next_cost", "machine": {"cores": os.cpu_count()}, "figures": result,
                              "ratios": {"inline_over_thread": result["inline_over_thread"]}}))
            return 0
        result = measure(str(data), args.batch_size, args.threads, args.py_workers, args.batches, args.repeats,
                         ceiling=args.ceiling)
    for name in FEEDS:
        print(f"{name:<8} {result[name + '_images_per_s']:>10.1f} images/s  "
              f"{result[name + '_rank_cpu_ms_per_batch']:>7.2f} ms rank CPU a batch")
    print(f"after / before: {result['after_over_before']:.2f}x images/s, "
          f"{result['rank_cpu_before_over_after']:.2f}x less rank CPU a batch")
    ratios = {k: result[k] for k in ("after_over_before", "rank_cpu_before_over_after", "after_over_reader")}
    print(json.dumps({"bench": "dali_source_probe", "machine": {"cores": os.cpu_count()}, "figures": result,
                      "ratios": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
