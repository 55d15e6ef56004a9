"""Steady-state images/s of the DALI pipeline and the reference loader against the loader
most PyTorch users would write (`torchvision_style.py`), same shards.

    python benchmarks/pipeline_bench.py [--data SHARD_DIR] [--batch-size 128] [--workers 2]
        [--batches 50] [--repeats 3] [--device cpu|cuda]

Without --data it writes synthetic 256x256 JPEGs (quality 90) in shards of 256 under a
temporary folder, enough that the warm-up and timed batches lie inside one epoch: an
ImageNet epoch is 10,000 batches, so an epoch boundary (a pipeline rebuild) inside a
window of a dozen batches would measure start-up, not the steady state. Both backends run
train mode (random crop, flip, lighting, mean image); the torchvision-style loader runs
webdataset + Pillow + RandomCrop(224), flip, ToTensor, Normalize. All three use the same
batch size and the same number of threads (DALI) / DataLoader workers (the other two,
both started by the same forkserver). Every batch is consumed (summed on the device), the
first `--warmup` batches of each run are left out (pipeline start, worker start-up), and
the rest timed; the loaders run `--repeats` times, interleaved, and each one's best run
counts. Prints a table, then the JSON line of docs/design.md "Benchmarks" last; each ratio is
ours over the other (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "pipeline"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from pipeline import make_loader  # noqa: E402


BACKENDS = ("dali", "reference", "torchvision_style")


def open_loader(data: Path, backend: str, args):
    if backend == "torchvision_style":
        from torchvision_style import make_torchvision_style_loader

        from pipeline.reference import worker_context

        return make_torchvision_style_loader(data, args.batch_size, args.workers, worker_context(),
                                             pin_memory=args.device == "cuda")
    loader = make_loader(data, backend=backend, batch_size=args.batch_size, num_workers=args.workers,
                         device=args.device, seed=1)  # fmt: skip
    if backend == "dali" and loader.backend != "dali":
        raise SystemExit("DALI is not importable here")
    return loader


def images_per_sec(data: Path, backend: str, args) -> float:
    loader = open_loader(data, backend, args)
    done, t0, epoch = 0, None, 0
    while done < args.warmup + args.batches:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for images, labels in loader:
            images = images.to(args.device)
            images.float().sum().item()  # consume: the batch must really exist
            done += 1
            if done == args.warmup:
                t0, counted = time.perf_counter(), 0
            elif done > args.warmup:
                counted += len(labels)
            if done == args.warmup + args.batches:
                break
        epoch += 1
    return counted / (time.perf_counter() - t0)


def machine(args) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": args.device}  # fmt: skip
    try:
        import nvidia.dali as dali

        info["dali"] = dali.__version__
    except ImportError:
        info["dali"] = None
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=50, help="timed batches per backend")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per backend; the best counts")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        data = args.data
        if data is None:
            from synthetic_shards import write_split, write_stats

            needed = (args.warmup + args.batches + 1) * args.batch_size
            data = Path(tmp)
            train = write_split(data, "train", [256] * -(-needed // 256), seed=0)
            write_split(data, "val", [64], seed=1, first_label=len(train))
            write_stats(data, train[:1024])  # float64 statistics of every image would not fit in memory
            del train
        # Interleaved repetitions, best of each: a slow moment of the machine should not land
        # on one backend only.
        rates = dict.fromkeys(BACKENDS, 0.0)
        for _ in range(args.repeats):
            for b in rates:
                rates[b] = max(rates[b], images_per_sec(data, b, args))
    print(f"{'loader':<20}{'images/s':>12}   (batch {args.batch_size}, {args.workers} threads/workers, {args.device})")
    for b, r in rates.items():
        print(f"{b:<20}{r:>12.1f}")
    ratios = {"dali_over_reference": rates["dali"] / rates["reference"],
              "dali_over_torchvision_style": rates["dali"] / rates["torchvision_style"],
              "reference_over_torchvision_style": rates["reference"] / rates["torchvision_style"]}
    for name, r in ratios.items():
        print(f"{name:<36}{r:>8.2f}x")
    figures = {f"{b}_images_per_sec": round(r, 1) for b, r in rates.items()}
    print(json.dumps({"bench": "pipeline", "machine": machine(args), "figures": figures,
                      "ratios": {k: round(v, 2) for k, v in ratios.items()}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
