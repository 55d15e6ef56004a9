"""ImageNet scale: how each per-dataset cost grows with the number of samples.

    python benchmarks/scale_bench.py [--sizes 10000,40000,160000] [--full 1281167]
        [--workers 2] [--batch-size 64] [--batches 6] [--epochs 3] [--workdir DIR]

Per size N (1,000 classes; val N/25.6 as in ImageNet): builds a synthetic source tree of
hard links to tiny distinct JPEGs, runs `preprocess shard` on it (wall time, the parent's
peak RSS, each worker's peak private memory, bytes left under OUT/.preprocess/), then for
each backend, in a fresh process: `make_loader`, the first batch, each of `--epochs` epoch
starts (iter() to its first batch, `--batches` batches each: a real 1.28 M epoch takes an
hour on this machine) and the private memory of the rank and of each worker after them;
for the reference loader the lookup time per sample on the last of 8 ranks and each
worker's own memory (its private memory less the batch it is writing into the shared
memory the rank maps next); and
`trainer train` from its start to the first optimizer step. `--full` adds ImageNet's own
count (1,281,167 train samples in 1,282 shards, 50,000 val) as hard links of the largest
size's first shard, where the loaders and the trainer run for real (DALI also as rank 7 of
8, what one rank of an 8-GPU node holds); preprocess figures at
1.28 M, and every figure at the Fall 2011 release (15 M images, 21,841 classes), are
extrapolated by least squares, linear in N, from the sizes measured (named in
`extrapolated`). A class sweep (`--class-sweep`) runs `preprocess shard` on 1,000 to
16,000 classes of one image each, to show nothing grows faster than the class count.
Timings are noisy on a shared machine; compare figures of one run. Last line: the JSON of
docs/design.md "Benchmarks"; `ratios` are target over measured (>= 1: target met). With
`--epochs` above 3 the rank's RSS rise over all of them, its least-squares trend per epoch,
its spread and the spread over the later half of them are reported too (a rise over 3
epochs can be one epoch's scatter; use `--epochs 10` or more to judge flatness).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import corpus, probes  # noqa: E402

FALL2011_IMAGES, FALL2011_CLASSES = 15_000_000, 21_841
RANKS_PER_NODE, WORKERS_PER_RANK = 8, 16
# What the Fall 2011 paragraph asks for: preprocess memory, manifest size, index memory per rank.
FALL2011 = ("preprocess_parent_peak_mb", "preprocess_worker_private_mb", "preprocess_state_mb", "manifest_kb",
            "ref_index_node_mb", "ref_rank_rss_mb", "ref_worker_own_mb", "dali_rank_rss_mb")
# Fitted to 1.28 M from the sizes when not measured there (preprocess does not run at 1.28 M).
FIT_TO_FULL = ("preprocess_wall_s", "preprocess_parent_peak_mb", "preprocess_worker_private_mb",
               "preprocess_state_mb", "manifest_kb")
# Issue 12's targets at 1.28 M, as (figure, target, "max"): the figure must stay at or below.
TARGETS = {"ref_worker_private_mb": 50, "ref_worker_own_mb": 50, "ref_lookup_us": 2, "ref_epoch_start_s": 1,
           "preprocess_parent_peak_mb": 1024, "preprocess_state_mb": 100}


def fit(xs: list[float], ys: list[float]):
    """Least-squares a + b x; returns the function."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return lambda x: my + b * (x - mx)


def exponent(n1: float, y1: float, n2: float, y2: float) -> float | None:
    if y1 <= 0 or y2 <= 0:
        return None
    return math.log(y2 / y1) / math.log(n2 / n1)


def measure_size(n: int, work: Path, pool, args, keep_shards: bool) -> dict:
    src = corpus.build_source(work / f"src-{n}", pool, n, round(n * corpus.IMAGENET_VAL / corpus.IMAGENET_TRAIN))
    shards = work / f"shards-{n}"
    row = {"n": n, "preprocess": probes.preprocess_run(src, shards, args.workers)}
    shutil.rmtree(src)
    row.update(measure_loaders(shards, work, args))
    if not keep_shards:
        shutil.rmtree(shards)
    return row


def measure_loaders(shards: Path, work: Path, args, last_of_8: bool = False) -> dict:
    row = {b: probes.loader_run(shards, b, args.batch_size, args.workers, args.epochs, args.batches)
           for b in args.backends}
    if last_of_8 and "dali" in args.backends:  # what one rank of an 8-GPU node holds
        row["dali8"] = probes.loader_run(shards, "dali", args.batch_size, args.workers, args.epochs,
                                         args.batches, rank=RANKS_PER_NODE - 1, world_size=RANKS_PER_NODE)
    run_dir = work / f"runs-{shards.name}" / "run"
    row["trainer_first_step_s"] = probes.trainer_first_step(shards, run_dir)
    shutil.rmtree(run_dir.parent)
    return row


def flat(row: dict) -> dict:
    """The per-size figures the report and the fits use."""
    out = {}
    if "preprocess" in row:
        p = row["preprocess"]
        out.update({"preprocess_wall_s": p["wall_s"], "preprocess_parent_peak_mb": p["parent_peak_mb"],
                    "preprocess_worker_private_mb": p["worker_private_mb"], "preprocess_state_mb": p["state_mb"],
                    "manifest_kb": p["manifest_kb"]})
    for b, key in (("reference", "ref"), ("dali", "dali"), ("dali8", "dali_rank7of8")):
        r = row.get(b)
        if r is None:
            continue
        e = r["epochs"]
        out[f"{key}_make_loader_s"] = r["make_loader_s"]
        out[f"{key}_first_batch_s"] = r["first_batch_s"]
        out[f"{key}_epoch_start_s"] = max(x["start_s"] for x in e[1:]) if len(e) > 1 else e[0]["start_s"]
        out[f"{key}_rank_private_mb"] = max(x["private_mb"] for x in e)
        out[f"{key}_rank_rss_mb"] = max(x["rss_mb"] for x in e)
        out[f"{key}_rss_growth_mb_3_epochs"] = e[min(2, len(e) - 1)]["rss_mb"] - e[0]["rss_mb"]
        if len(e) > 3:  # --epochs beyond 3: the rise over all of them, its trend, and max - min
            rss = [x["rss_mb"] for x in e]
            out[f"{key}_rss_growth_mb_all_epochs"] = rss[-1] - rss[0]
            trend = fit(list(range(len(rss))), rss)
            out[f"{key}_rss_slope_mb_per_epoch"] = trend(1) - trend(0)
            out[f"{key}_rss_spread_mb"] = max(rss) - min(rss)
            # The first starts fill the heap and the allocator's caches once; what is
            # flat is the spread of the later half (a rise that goes on shows up here too).
            late = rss[len(rss) // 2 :]
            out[f"{key}_rss_spread_last_half_mb"] = max(late) - min(late)
        out[f"{key}_images_per_s"] = max(x["images_per_s"] for x in e)
        if b == "reference" and "lookup_us_last_rank" in r:
            out["ref_worker_private_mb"] = max(x["worker_private_mb"] for x in e)
            out["ref_worker_private_floor_mb"] = max(x["worker_private_floor_mb"] for x in e)
            if "worker_own_mb" in e[0]:  # not in runs before it was measured
                out["ref_worker_own_mb"] = max(x["worker_own_mb"] for x in e)
            out["ref_lookup_us"] = r["lookup_us_last_rank"]
        if b != "reference" and "dali_schedule_s" in r:  # the run's one pipeline: what a reset costs in N
            out[f"{key}_schedule_s"] = r["dali_schedule_s"]
            out[f"{key}_source_private_mb"] = max(x["worker_private_mb"] for x in e)
        if b == "reference" and "index_mb" in r:
            out["ref_index_node_mb"] = r["index_mb"] * (1 if r["index_node_shared"] else RANKS_PER_NODE)
    if "trainer_first_step_s" in row:
        out["trainer_first_step_s"] = row["trainer_first_step_s"]
    return out


def class_sweep(work: Path, pool, counts: list[int], workers: int) -> list[dict]:
    rows = []
    for c in counts:
        src = corpus.build_source(work / f"classes-{c}", pool, c, 0, classes=c)
        out = work / f"classes-{c}-out"
        p = probes.preprocess_run(src, out, workers)
        rows.append({"classes": c, "wall_s": p["wall_s"], "parent_peak_mb": p["parent_peak_mb"],
                     "manifest_kb": p["manifest_kb"]})
        shutil.rmtree(src)
        shutil.rmtree(out)
    return rows


def report(rows: list[dict], full: dict | None, sweep: list[dict], args) -> dict:
    sizes = [r["n"] for r in rows]
    per = [flat(r) for r in rows]
    full_flat = flat(full) if full else {}
    names = sorted({k for f in per for k in f} | full_flat.keys())
    print(f"{'figure':<40}" + "".join(f"{n:>12,}" for n in sizes) + (f"{args.full:>12,}" if full else ""))
    for k in names:
        vals = "".join(f"{f.get(k, float('nan')):>12.3f}" for f in per)
        print(f"{k:<40}{vals}" + (f"{full_flat.get(k, float('nan')):>12.3f}" if full else ""))
    print("growth exponents (log ratio of figures / log ratio of sizes), between consecutive sizes:")
    for k in names:
        ex = [exponent(sizes[i], per[i].get(k, 0), sizes[i + 1], per[i + 1].get(k, 0)) for i in range(len(sizes) - 1)]
        if any(e is not None for e in ex):
            print(f"  {k:<38}" + "".join(f"{e:>8.2f}" if e is not None else f"{'-':>8}" for e in ex))
    figures, extrapolated = {}, []
    n_full = args.full or sizes[-1]
    for k in names:
        xs = [n for n, f in zip(sizes, per) if k in f]
        ys = [f[k] for f in per if k in f]
        if k in full_flat:
            figures[k] = full_flat[k]
            xs, ys = xs + [n_full], ys + [full_flat[k]]
        elif sizes[-1] == corpus.IMAGENET_TRAIN and k in per[-1]:  # ImageNet's count run for real
            figures[k] = per[-1][k]
        elif k in FIT_TO_FULL and len(xs) >= 3:
            figures[k] = fit(xs, ys)(corpus.IMAGENET_TRAIN)
            extrapolated.append(k)
        if k in FALL2011 and len(xs) >= 3:
            figures[f"fall2011_{k}"] = fit(xs, ys)(FALL2011_IMAGES)
            extrapolated.append(f"fall2011_{k}")
    if "ref_worker_private_mb" in figures:
        per_node = RANKS_PER_NODE * WORKERS_PER_RANK / 1024
        figures["ref_node_worker_private_gb"] = figures["ref_worker_private_mb"] * per_node
    if "ref_worker_own_mb" in figures:  # the workers' own memory a node, the batches and page cache apart
        figures["ref_node_worker_own_gb"] = figures["ref_worker_own_mb"] * RANKS_PER_NODE * WORKERS_PER_RANK / 1024
    if {"dali_rank7of8_rank_rss_mb", "fall2011_dali_rank_rss_mb", "dali_rank_rss_mb"} <= figures.keys():
        # One of 8 ranks parses 1/8 of what a lone rank does: scale the lone rank's growth.
        grown = (figures["fall2011_dali_rank_rss_mb"] - figures["dali_rank_rss_mb"]) / RANKS_PER_NODE
        figures["fall2011_dali_rank7of8_rss_mb"] = figures["dali_rank7of8_rank_rss_mb"] + grown
        extrapolated.append("fall2011_dali_rank7of8_rss_mb")
    if sweep:
        c0, c1 = sweep[0], sweep[-1]
        figures["class_sweep_manifest_exponent"] = exponent(c0["classes"], c0["manifest_kb"], c1["classes"],
                                                            c1["manifest_kb"])
        figures["class_sweep_wall_exponent"] = exponent(c0["classes"], c0["wall_s"], c1["classes"], c1["wall_s"])
        # The sweep adds one image per class: its slope bounds the per-class cost from above.
        for k, key in (("manifest_kb", "manifest_kb"), ("preprocess_parent_peak_mb", "parent_peak_mb")):
            if f"fall2011_{k}" in figures:
                slope = (c1[key] - c0[key]) / (c1["classes"] - c0["classes"])
                figures[f"fall2011_{k}"] += max(slope, 0.0) * (FALL2011_CLASSES - corpus.IMAGENET_CLASSES)
        print("class sweep (one image a class):", json.dumps(sweep))
    figures = {k: round(v, 4) for k, v in figures.items() if v is not None}
    ratios = {f"{k}_target_over_measured": round(t / max(figures[k], 1e-9), 3)
              for k, t in TARGETS.items() if k in figures}
    print("at 1.28 M (extrapolated: " + ", ".join(extrapolated) + "):")
    for k in sorted(figures):
        print(f"  {k:<44}{figures[k]:>14,.3f}")
    return {"bench": "scale", "machine": machine(args), "figures": figures, "extrapolated": sorted(extrapolated),
            "sizes": sizes + ([args.full] if full else []), "ratios": ratios}


def machine(args) -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "workers": args.workers,
            "batch_size": args.batch_size}
    try:
        import nvidia.dali as dali

        info["dali"] = dali.__version__
    except ImportError:
        info["dali"] = None
    return info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        data, backend, *numbers = argv[1:]
        print(json.dumps(probes.loader_child(data, backend, *map(int, numbers))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,40000,160000")
    p.add_argument("--full", type=int, default=corpus.IMAGENET_TRAIN, help="0: skip the ImageNet-sized split")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=6, help="batches per epoch start")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backends", default="reference,dali")
    p.add_argument("--class-sweep", default="1000,4000,16000", help="'' to skip")
    p.add_argument("--workdir", type=Path, help="keep the corpora here (default: a temporary folder)")
    args = p.parse_args(argv)
    args.backends = args.backends.split(",")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="scale-bench-")
    work = args.workdir or Path(tmp)
    try:
        pool = corpus.build_pool(work / "pool")
        rows = [measure_size(n, work, pool, args, keep_shards=n == sizes[-1] and args.full > 0) for n in sizes]
        full = None
        if args.full:
            linked = corpus.link_full_split(work / f"shards-{sizes[-1]}", work / "shards-full", n_train=args.full)
            full = measure_loaders(linked, work, args, last_of_8=True)
            shutil.rmtree(linked)
            shutil.rmtree(work / f"shards-{sizes[-1]}")
        sweep = class_sweep(work, pool, [int(c) for c in args.class_sweep.split(",")], args.workers) \
            if args.class_sweep else []
        print(json.dumps({"rows": rows, "full": full}), file=sys.stderr)  # the raw figures, for the record
        print(json.dumps(report(rows, full, sweep, args)))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
