"""The measurements of `benchmarks/scale_bench.py`, each on the real code path.

`preprocess_run`: `preprocess shard` as a subprocess: wall time, the parent's peak RSS
(its own getrusage, printed at exit), each worker's peak private memory (polled), and the
bytes left under OUT/.preprocess/. `loader_run` (in a fresh process, see `loader_child`):
`make_loader`, the first batch, each epoch's start (iter() to its first batch) and the
memory of the rank and of its workers after each epoch's batches, for one backend.
`lookup_us`: the reference loader's position -> (shard, sample) lookup, per sample, on
the last of 8 ranks. `trainer_first_step`: `trainer train` from process start to the wall
time of its first optimizer step's metric row.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.scale.memory import MB, TreeSampler, descendants, self_usage, usage

REPO = Path(__file__).resolve().parents[2]
_WRAP = ("import json, resource, sys\nfrom preprocess.cli import main\nrc = main(sys.argv[1:])\n"
         "print('SCALE_RUSAGE', json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), flush=True)\n"
         "sys.exit(rc)\n")


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / MB


def preprocess_run(src: Path, out: Path, workers: int, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-c", _WRAP, "shard", "--src", str(src), "--out", str(out), "--workers", str(workers),
           "--progress", "off", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeSampler(proc.pid) as sampler:
        text, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"preprocess shard failed ({proc.returncode}):\n{text[-3000:]}")
    maxrss_kb = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SCALE_RUSAGE")))
    return {"wall_s": wall, "parent_peak_mb": maxrss_kb / 1024,
            "worker_private_mb": max(sampler.peak_private.values(), default=0.0),
            "state_mb": folder_mb(out / ".preprocess"),
            "manifest_kb": (out / "dataset.json").stat().st_size / 1024}


def _worker_usage(pid: int, depth: int = 2) -> list[dict]:
    """The loader's processes: reference workers are children of the forkserver (the rank's
    grandchildren, depth 2). The DALI backend starts none since issue 25 (its batch source
    reads in the rank); its source processes were the rank's children (depth 1)."""
    return [u for p, d in descendants(pid).items() if d == depth and (u := usage(p, shm=True)) is not None]


def lookup_us(loader, batch_size: int, rank: int = 7, world_size: int = 8, samples: int = 2048) -> float:
    """Seconds per sample, in µs, of the reference loader's lookup of its positions: a
    batch at a time, as its sampler does (`EpochPlan.locate`, then global sample numbers)."""
    from pipeline.sharding import plan_epoch, rank_positions

    index = loader.index
    plan = plan_epoch(index.sizes, train=True, batch_size=batch_size, rank=rank, world_size=world_size, seed=0,
                      epoch=1)
    positions = rank_positions(plan, batch_size, True, seed=1)[:samples]
    t0 = time.perf_counter()
    for b in range(0, len(positions), batch_size):
        index.global_id(*plan.locate(positions[b : b + batch_size]))
    return (time.perf_counter() - t0) / len(positions) * 1e6


def loader_child(data: str, backend: str, batch_size: int, workers: int, epochs: int, batches: int,
                 rank: int = 0, world_size: int = 1) -> dict:
    """Runs in its own process (`scale_bench.py --child`): one rank's loader over `epochs`
    epoch starts, `batches` batches each (a whole epoch of 1.28 M images takes an hour here)."""
    import os

    import torch

    torch.set_num_threads(1)
    from pipeline import make_loader

    base = self_usage()
    t0 = time.perf_counter()
    loader = make_loader(data, backend=backend, batch_size=batch_size, num_workers=workers, seed=0, rank=rank,
                         world_size=world_size)
    depth = 2 if loader.backend == "reference" else 1
    out = {"backend": loader.backend, "make_loader_s": time.perf_counter() - t0, "base_rss_mb": base["rss_mb"],
           "epochs": []}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        start = time.perf_counter() - t0
        # Each worker's private memory after every batch: the highest includes a batch
        # being built; the lowest is what a worker holds whatever it does (an index copy);
        # "own" leaves out the batch being written, in shared memory the rank maps next, and
        # the offsets-table pages mapped so far (page cache: one copy a node).
        seen = [_worker_usage(os.getpid(), depth)]
        t1 = time.perf_counter()
        for _ in range(batches - 1):
            next(it)
            seen.append(_worker_usage(os.getpid(), depth))
        rate = (batches - 1) * batch_size / (time.perf_counter() - t1)
        rank = self_usage()
        private = [w["private_mb"] for sample in seen for w in sample]
        own = [w["private_mb"] - w["shm_private_mb"] - w["table_private_mb"] for sample in seen for w in sample]
        out["epochs"].append({"start_s": start, "images_per_s": rate, "rss_mb": rank["rss_mb"],
                              "private_mb": rank["private_mb"], "worker_private_mb": max(private, default=0.0),
                              "worker_private_floor_mb": min(private, default=0.0),
                              "worker_own_mb": max(own, default=0.0), "workers": len(seen[-1])})
        del it
    if backend == "dali":
        # What an epoch start costs that grows with N: the epoch's sample numbers and its
        # schedule file (the pipeline's reset() itself is O(1)). The timed starts above also
        # take the batches in flight of the epoch broken off before them, which the
        # trainer's starts, after a whole epoch, do not.
        t0 = time.perf_counter()
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            ids = loader.epoch_ids(loader.plan())
            loader.schedule.write(0, epoch, epoch, 0, ids)
        out["dali_schedule_s"] = (time.perf_counter() - t0) / epochs
    if backend == "reference":
        # The offsets table: one page-cache copy a node when it is the split's file, else one a rank.
        out["index_mb"] = loader.index.table.nbytes / (1 << 20)
        out["index_node_shared"] = loader.index.node_shared
    if backend == "reference" and world_size == 1:
        out["lookup_us_last_rank"] = lookup_us(loader, batch_size)
        out["lookup_us_rank0"] = lookup_us(loader, batch_size, rank=0)
    out["first_batch_s"] = out["make_loader_s"] + out["epochs"][0]["start_s"]
    return out


def loader_run(data: Path, backend: str, batch_size: int, workers: int, epochs: int, batches: int,
               rank: int = 0, world_size: int = 1, timeout: float = 1800) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "scale_bench.py"), "--child", str(data), backend,
           str(batch_size), str(workers), str(epochs), str(batches), str(rank), str(world_size)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loader child ({backend}, {data}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def trainer_first_step(data: Path, run_dir: Path, backend: str = "reference", timeout: float = 900) -> float:
    """Seconds from starting `trainer train` to its first optimizer step (a metric row's wall)."""
    cmd = [sys.executable, "-m", "trainer.cli", "train", "--data", str(data), "--run-dir", str(run_dir),
           "--device", "cpu", "--backend", backend, "--width", "0.0625", "--batch-size", "32",
           "--num-workers", "2", "--max-steps", "1", "--log-every", "1", "--val-every", "0", "--no-tencrop"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"trainer train failed:\n{proc.stderr[-3000:]}")
    with sqlite3.connect(run_dir.parent / "runs.db") as conn:
        (wall,) = conn.execute("SELECT MIN(wall) FROM metrics WHERE step >= 1").fetchone()
    return wall - t0
