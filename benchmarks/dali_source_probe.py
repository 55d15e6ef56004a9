"""Does the DALI backend's source keep up with DALI's own reader? A probe for issue 12.

    python benchmarks/dali_source_probe.py [--data SHARD_DIR] [--batch-size 128] [--threads 2]
        [--batches 40] [--repeats 3] [--py-workers 2] [--ceiling]

The DALI backend builds one pipeline for the run. Its samples come from a parallel
`fn.external_source` (`pipeline.dalisource`: DALI's Python worker processes read each
JPEG through the offsets table, in the reference loader's order) and its crop offsets and
flips from a batch source in the rank; DALI's webdataset reader, which it replaced, takes
its file list at build time. This times both feeds on the same shards, interleaved, best
of `--repeats` each: the train graph up to the uint8 windows (ROI decode, crop, mirror; what
`pipeline.dali.define_graph` runs on the CPU), or with `--ceiling` the feed alone (no
decode: what DALI's rank spends gathering the samples, which bounds the pipeline on a
GPU, where the decode is not the limit). The GPU check's `dali_external_source` step runs
the first. Without --data it writes synthetic shards as `pipeline_bench.py` does. Last
line: JSON.
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


def outputs(jpg, cls, x, y, flip, device_id: int | None, ceiling: bool) -> tuple:
    if ceiling:
        return jpg, cls, x, y, flip
    return windows_graph(jpg, x, y, flip, device_id), cls


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
        pipe.set_outputs(*outputs(jpg, cls, x, y, flip, device_id, ceiling))
    return pipe


def source_pipeline(data: str, batch: int, threads: int, py_workers: int, device_id: int | None,
                    ceiling: bool = False) -> Pipeline:
    """The DALI backend's own feed (`pipeline.dali.read_nodes`), its epoch-0 schedule written."""
    device = "cpu" if device_id is None else f"cuda:{device_id}"
    loader = make_loader(data, backend="dali", batch_size=batch, num_workers=threads, seed=1, device=device)
    loader._ids = loader.epoch_ids(loader.plan())
    loader._write_schedule(0)
    pipe = Pipeline(batch_size=batch, num_threads=threads, device_id=device_id, seed=1, prefetch_queue_depth=2,
                    py_num_workers=py_workers, py_start_method="spawn")
    with pipe:
        n = read_nodes(loader.source(), replace(loader.batch_params(), outputs=("x", "y", "flip")))
        pipe.set_outputs(*outputs(n["jpg"], n["cls"], n["x"], n["y"], n["flip"], device_id, ceiling))
    pipe._probe_loader = loader  # its schedule folder lives as long as the pipeline
    return pipe


def images_per_sec(make, data: str, batch: int, threads: int, py_workers: int, batches: int,
                   device_id: int | None, ceiling: bool = False) -> float:
    pipe = make(data, batch, threads, py_workers, device_id, ceiling)
    pipe.build()
    for _ in range(3):
        pipe.run()
    t0 = time.perf_counter()
    for _ in range(batches):
        outs = pipe.run()
    if device_id is not None:
        outs[0].as_tensor()  # the last batch is done on the device
    rate = batches * batch / (time.perf_counter() - t0)
    del pipe
    return rate


def measure(data: str, batch: int, threads: int, py_workers: int, batches: int, repeats: int,
            device_id: int | None = None, ceiling: bool = False) -> dict:
    """Best images/s of each feed over `repeats` interleaved runs, and their ratio (also
    the GPU check's step `dali_external_source`). `batches` must fit in one epoch."""
    rates = {"reader": 0.0, "external_source": 0.0}
    for _ in range(repeats):
        for name, make in (("reader", reader_pipeline), ("external_source", source_pipeline)):
            rates[name] = max(rates[name], images_per_sec(make, data, batch, threads, py_workers, batches, device_id,
                                                                   ceiling))
    return {"reader_images_per_s": round(rates["reader"], 1),
            "external_source_images_per_s": round(rates["external_source"], 1),
            "external_source_over_reader": round(rates["external_source"] / rates["reader"], 3),
            "batch": batch, "threads": threads, "py_workers": py_workers, "ceiling": ceiling}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--py-workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ceiling", action="store_true", help="time the feeds alone, without the decode")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dali-source-probe-") as tmp:
        data = args.data
        if data is None:
            from synthetic_shards import write_split, write_stats

            data = Path(tmp)
            train = write_split(data, "train", [256] * -(-(args.batches + 4) * args.batch_size // 256), seed=0)
            write_stats(data, train[:1024])
            del train
        result = measure(str(data), args.batch_size, args.threads, args.py_workers, args.batches, args.repeats,
                         ceiling=args.ceiling)
    print(f"reader            {result['reader_images_per_s']:>10.1f} images/s")
    print(f"external_source   {result['external_source_images_per_s']:>10.1f} images/s")
    print(f"external_source / reader {result['external_source_over_reader']:.2f}x")
    print(json.dumps({"bench": "dali_source_probe", "machine": {"cores": os.cpu_count()}, "figures": result,
                      "ratios": {"external_source_over_reader": result["external_source_over_reader"]}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
