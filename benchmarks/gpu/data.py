"""Shards for the GPU check, made on the spot: a photo corpus written by all cores, then
`preprocess shard` over it.

Nothing of ImageNet's size can travel to the GPU host (64 MiB a call), so the images are
made there: random crops, flips and colour changes of the real photos scikit-image and
scikit-learn ship (the demo corpus's recipe, `preprocess.democorpus.make_sample`), which
gives the JPEG decoder photo-like work. Where those packages are missing it falls back to
the synthetic colour fields of the pipeline tests and says so. The shards then come from
the project's own `preprocess shard`, so they are exactly what training reads.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from preprocess import democorpus

SPLIT_CODE = {"train": 0, "val": 1}


def photo_source() -> str:
    """"photos" when the demo corpus's packages are there, else "synthetic"."""
    try:
        democorpus.load_photo(0)
        democorpus.load_photo(len(democorpus.PHOTOS) - 1)
        return "photos"
    except Exception:
        return "synthetic"


@functools.lru_cache(maxsize=None)
def _photo(index: int, source: str) -> np.ndarray:
    if source == "photos":
        return democorpus.load_photo(index)[1]
    from synthetic_shards import synthetic_image  # tests/pipeline, on sys.path

    big = np.kron(synthetic_image(np.random.default_rng(index)), np.ones((2, 2, 1), np.uint8))
    return big  # 512x512, so crops and rescaling have something to do


def _write_chunk(task) -> int:
    out, split, c, start, stop, seed, source, spec = task
    photo = _photo(c, source)
    folder = Path(out) / split / f"n{c + 1:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, c, SPLIT_CODE[split], i])
        (folder / f"n{c + 1:08d}_{split}_{i}.JPEG").write_bytes(democorpus.make_sample(photo, rng, spec))
    return stop - start


def write_corpus(out: Path, classes: int, train_per_class: int, val_per_class: int,
                 workers: int, seed: int = 0, chunk: int = 64) -> dict:
    """ImageNet-layout folders under `out`; samples a little over 256 px so that
    `preprocess shard` resizes as it would on ImageNet, only cheaper."""
    source = photo_source()
    classes = min(classes, democorpus.max_classes())
    spec = democorpus.CorpusSpec(classes=classes, seed=seed, min_side=256, max_side=320)
    tasks = [
        (str(out), split, c, s, min(s + chunk, n), seed, source, spec)
        for split, n in (("train", train_per_class), ("val", val_per_class))
        for c in range(classes)
        for s in range(0, n, chunk)
    ]
    t0 = time.perf_counter()
    # fork: the workers inherit sys.path and need no re-import of the check itself. The
    # parent holds a CUDA context by now; like torch's DataLoader workers, the children
    # never touch CUDA, which is what makes a fork after CUDA init safe.
    with mp.get_context("fork").Pool(workers) as pool:
        written = sum(pool.imap_unordered(_write_chunk, tasks))
    return {"source": source, "classes": classes, "images": written,
            "corpus_seconds": round(time.perf_counter() - t0, 2)}


def shard(src: Path, out: Path, workers: int, shard_max_count: int, log) -> dict:
    """`preprocess shard` in a child process (its own progress output goes to our log)."""
    cmd = [sys.executable, "-m", "preprocess.cli", "shard", "--src", str(src), "--out", str(out),
           "--workers", str(workers), "--shard-max-count", str(shard_max_count), "--progress", "lines"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log(proc.stdout[-2000:] + proc.stderr[-2000:])
    if proc.returncode != 0:
        raise RuntimeError(f"preprocess shard failed ({proc.returncode}): {proc.stderr[-500:]}")
    return {"shard_seconds": round(time.perf_counter() - t0, 2),
            "train_shards": len(list(out.glob("train-*.tar"))),
            "shard_bytes": sum(p.stat().st_size for p in out.glob("*.tar"))}


def run_json(script: Path, argv: list[str], log) -> dict:
    """Run another benchmark (docs/design.md: its last line is one JSON object); its output goes
    to our log, its JSON line comes back."""
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    log(proc.stdout[-3000:] + proc.stderr[-3000:])
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_pytest(root: Path, args: list[str], log, timeout: int = 240) -> dict:
    """pytest in a child process; counts from its summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=timeout)
    log(proc.stdout[-4000:] + proc.stderr[-2000:])
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)}
    return {"rc": proc.returncode, "summary": summary[-300:], "passed_tests": counts.get("passed", 0),
            "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0),
            "collection_errors": counts.get("error", 0) + counts.get("errors", 0)}
