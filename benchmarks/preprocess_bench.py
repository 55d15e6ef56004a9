"""Benchmark of `preprocess shard` against a naive Pillow script, in the same run.

    python benchmarks/preprocess_bench.py [--images 1008] [--repeats 2] [--keep DIR]

Builds a corpus of real-photo JPEGs at ImageNet-like sizes (shorter sides 300-1200, made
from the photos scikit-image and scikit-learn ship), and a copy of its first quarter, then
times, as subprocesses on both corpora:
  - the naive script (open, convert to RGB, bicubic resize of the full image, center crop,
    save JPEG q95);
  - the script a careful user writes: the same, but with Pillow's `draft()` first, so that
    libjpeg decodes at 1/2, 1/4 or 1/8 scale whenever that still covers the 256 target;
  - `preprocess shard --workers 1` and `--workers 2` (whole job).
Every contender writes its output (JPEG files for the scripts; tar shards, index files,
statistics and manifest for ours).
Throughput is the difference quotient (images of the big corpus - images of the small one)
/ (difference of their times): what a long job like ImageNet's sees, with each command's
fixed start-up (which the two timings share) taken out and reported on its own. Also:
the whole-job ratio on the big corpus, the statistics' share of the per-image time, the
per-image work in one process against the naive one's, and the fidelity (worst and median
PSNR against the float64 full-decode reference, ours and the draft script's). Prints a table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess import democorpus, image
from preprocess.stats import Moments


# A few hundred images in shards of 1000 would be one shard, i.e. one unit of work: smaller
# shards let two workers share the job, as ImageNet's 1,281 shards do.
SHARD_MAX_COUNT = 64


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def naive_one(path: Path, out: Path, size: int = 256) -> None:
    with Image.open(path) as im:
        _resize_crop(im.convert("RGB"), size).save(out, format="JPEG", quality=95)


def draft_image(source, size: int = 256) -> Image.Image:
    """What a careful user writes: ask libjpeg for the smallest DCT-scaled decode (1/2, 1/4,
    1/8) that still covers the target, then the same bicubic resize and center crop."""
    with Image.open(source) as im:
        w, h = im.size
        s = size / min(w, h)
        im.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
        return _resize_crop(im.convert("RGB"), size)


def draft_one(path: Path, out: Path, size: int = 256) -> None:
    draft_image(path, size).save(out, format="JPEG", quality=95)


def time_script(function: str, files: list[Path], out: Path) -> float:
    """A per-image script (naive_one or draft_one) as its own process, like `preprocess
    shard`: start-up counts for both."""
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
            f"from preprocess_bench import {function}; "
            f"[{function}(Path(f), Path(sys.argv[2]) / f'{{i}}.jpg') "
            "for i, f in enumerate(Path(sys.argv[1]).read_text().splitlines())]")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(listing), str(out), str(Path(__file__).parent)], check=True)
    return time.perf_counter() - start


def time_shard(corpus: Path, out: Path, workers: int) -> float:
    cmd = [sys.executable, "-m", "preprocess.cli", "shard", "--src", str(corpus), "--out", str(out),
           "--workers", str(workers), "--progress", "off", "--overwrite",
           "--shard-max-count", str(SHARD_MAX_COUNT)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def inprocess_ratio(files: list[Path], out: Path) -> float:
    """Steady state, no start-up or tar writing: per-image work of ours over the naive one's."""
    image.set_threads(1)
    moments = Moments()
    start = time.perf_counter()
    for f in files:
        moments.add(pixels := image.prepare(f.read_bytes()))
        image.encode(pixels)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for f in files:
        naive_one(f, out / "x.jpg")
    return (time.perf_counter() - start) / ours


def stats_seconds(files: list[Path]) -> float:
    pixels = [image.prepare(f.read_bytes()) for f in files]
    m = Moments()
    start = time.perf_counter()
    for p in pixels:
        m.add(p)
    return time.perf_counter() - start


def psnr_worst_median(files: list[Path], prepare=image.prepare) -> tuple[float, float]:
    values = [image.psnr(prepare(d), image.reference(d)) for d in (f.read_bytes() for f in files)]
    return min(values), float(np.median(values))


def draft_pixels(data: bytes) -> np.ndarray:
    return np.asarray(draft_image(io.BytesIO(data)))


def subset_corpus(corpus: Path, files: list[Path], dest: Path) -> Path:
    """The same layout with only `files` (hard links, or copies across file systems)."""
    for f in files:
        target = dest / f.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            target.write_bytes(f.read_bytes())
    return dest


def machine() -> dict:
    import simplejpeg
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "pillow": Image.__version__, "torch": torch.__version__,
            "simplejpeg": simplejpeg.__version__}


def run(n_images: int, work: Path, repeats: int) -> dict:
    per_class = -(-n_images // len(democorpus.PHOTOS))
    corpus = democorpus.build(work / "corpus", democorpus.CorpusSpec(
        len(democorpus.PHOTOS), per_class, 0, seed=1, min_side=300, max_side=1200))
    files = sorted((corpus / "train").rglob("*.JPEG"))
    small_files = files[: len(files) // 4]
    small = subset_corpus(corpus, small_files, work / "corpus_small")
    sides = [min(Image.open(f).size) for f in files]
    # Interleaved repetitions, best of each: a slow moment of the machine should not land
    # on one contender only.
    keys = ("naive", "draft", "w1", "w2")
    best = {k + tail: float("inf") for k in keys for tail in ("", "_small")}
    for rep in range(repeats):
        for key, seconds in (("naive", lambda: time_script("naive_one", files, work / "naive")),
                             ("naive_small", lambda: time_script("naive_one", small_files, work / "naive_small")),
                             ("draft", lambda: time_script("draft_one", files, work / "draft")),
                             ("draft_small", lambda: time_script("draft_one", small_files, work / "draft_small")),
                             ("w1", lambda: time_shard(corpus, work / "shards1", 1)),
                             ("w1_small", lambda: time_shard(small, work / "shards1s", 1)),
                             ("w2", lambda: time_shard(corpus, work / "shards2", 2)),
                             ("w2_small", lambda: time_shard(small, work / "shards2s", 2))):
            best[key] = min(best[key], seconds())
    n, dn = len(files), len(files) - len(small_files)
    rate = {k: dn / (best[k] - best[f"{k}_small"]) for k in keys}
    startup = {k: best[k] - n / rate[k] for k in keys}
    t_stats = stats_seconds(files[::4]) * 4
    steady = inprocess_ratio(files[::2], work)
    ours_psnr, draft_psnr = psnr_worst_median(files[::5]), psnr_worst_median(files[::5], draft_pixels)
    return {
        "figures": {
            "images": n, "images_small": len(small_files), "repeats": repeats,
            "short_side_min": min(sides), "short_side_max": max(sides),
            "naive_images_per_s": rate["naive"], "draft_images_per_s": rate["draft"],
            "shard_w1_images_per_s": rate["w1"], "shard_w2_images_per_s": rate["w2"],
            "naive_startup_s": startup["naive"], "draft_startup_s": startup["draft"],
            "shard_w1_startup_s": startup["w1"], "shard_w2_startup_s": startup["w2"],
            "stats_share_of_w1_time": t_stats / (n / rate["w1"]),
            "worst_psnr_db": ours_psnr[0], "median_psnr_db": ours_psnr[1],
            "draft_worst_psnr_db": draft_psnr[0], "draft_median_psnr_db": draft_psnr[1],
        },
        "ratios": {"w1_over_naive_per_core": rate["w1"] / rate["naive"],
                   "w1_over_draft_per_core": rate["w1"] / rate["draft"],
                   "draft_over_naive_per_core": rate["draft"] / rate["naive"],
                   "w2_over_w1": rate["w2"] / rate["w1"],
                   "whole_job_w1_over_naive": best["naive"] / best["w1"],
                   "whole_job_w1_over_draft": best["draft"] / best["w1"],
                   "inprocess_per_image_over_naive": steady},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1008)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best counts")
    parser.add_argument("--keep", type=Path, help="build the corpus and outputs here instead of a temp dir")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.images, args.keep, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.images, Path(tmp), args.repeats)
    f = result["figures"]
    ratios = result["ratios"]
    print(f"{'what':36s} {'value':>10s}")
    for k, v in {**f, **ratios}.items():
        print(f"{k:36s} {v:10.3f}" if isinstance(v, float) else f"{k:36s} {v:10d}")
    print(json.dumps({"bench": "preprocess_shard", "machine": machine(),
                      "figures": {k: round(v, 4) for k, v in f.items()},
                      "ratios": {k: round(v, 4) for k, v in ratios.items()}}))


if __name__ == "__main__":
    main()
