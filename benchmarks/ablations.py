"""The paper's ablations as a grid of `trainer train` runs: error and images/s per variant.

    python benchmarks/ablations.py [--data shards/] [--epochs 3] [--width 0.0625] [--device cpu]
    python benchmarks/ablations.py --data /data/imagenet-shards --width 1 --epochs 90 \
        --device cuda --batch-size 128              (the same grid at the paper's scale)

Each variant flips one switch that sections 3 and 4 discuss (one column instead of two,
no LRN, 2/2 instead of 3/2 pooling, no dropout, no PCA lighting, per-channel instead of
per-pixel mean, tanh instead of ReLU; and section 6's sixth conv layer, and torchvision's
initialisation instead of the paper's) and is trained from the same seed with every other
setting equal. For each run this script checks that the switch is recorded in the run's
config in the run store (what the progress page shows), evaluates `last.pt` with
`trainer evaluate` (ten-patch and center top-1/top-5), and takes the trainer's own
images/s from the run store (median over the logged intervals, the first one dropped as
warm-up). Without `--data` it builds the demo corpus and its shards in the work folder.

On the demo corpus with a few epochs the errors show that the grid runs, not the paper's
effects, which need ImageNet and ~90 epochs. The last line is the JSON of docs/design.md,
"Benchmarks"; ratios are the paper's configuration over each variant, named so that higher
is better for the paper's choice: `VARIANT_top1_error_over_paper` (error of the variant
over the paper's) and `paper_images_per_sec_over_VARIANT`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (flags of `trainer train`, (config key, the value it must record))
VARIANTS: dict[str, tuple[list[str], tuple[str, object] | None]] = {
    "paper": ([], None),
    "groups1": (["--groups", "1"], ("groups", 1)),
    "no_lrn": (["--no-lrn"], ("lrn", False)),
    "pool_2x2": (["--no-overlap-pool"], ("overlap_pool", False)),
    "no_dropout": (["--dropout", "0"], ("dropout", 0.0)),
    "no_lighting": (["--lighting-std", "0"], ("lighting_std", 0.0)),
    "channel_mean": (["--mean", "channel"], ("mean", "channel")),
    "tanh": (["--activation", "tanh"], ("activation", "tanh")),
    "kaiming": (["--init", "kaiming"], ("init", "kaiming")),
    "extra_conv": (["--extra-conv"], ("extra_conv", True)),
}
# A run "leaves chance" at the first step where the mean training loss over the last
# CHANCE_WINDOW logged steps is CHANCE_MARGIN below ln(classes), the loss of a uniform guess.
CHANCE_WINDOW = 10
CHANCE_MARGIN = 0.1


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"ablations: `{' '.join(cmd[2:5])} ...` failed (exit {proc.returncode}):\n" + "\n".join(tail))


def demo_shards(workdir: Path) -> Path:
    shards = workdir / "shards"
    if (shards / "dataset.json").is_file():
        return shards
    corpus = workdir / "corpus"
    log = workdir / "prepare.log"
    _run(_python("preprocess.cli", "demo-corpus", "--out", str(corpus)), log)
    _run(_python("preprocess.cli", "shard", "--src", str(corpus), "--out", str(shards), "--synsets",
                 str(corpus / "LOC_synset_mapping.txt"), "--workers", "2", "--progress", "off"), log)
    return shards


def train_and_evaluate(name: str, flags: list[str], args, shards: Path, runs: Path) -> dict:
    run_dir = runs / name
    log = runs / f"{name}.log"
    log.unlink(missing_ok=True)
    common = ["--data", str(shards), "--run-dir", str(run_dir), "--runs-db", str(runs / "runs.db"),
              "--name", f"ablation-{name}-{args.tag}", "--resume", "never", "--device", args.device,
              "--width", str(args.width), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
              "--lr", str(args.lr), "--bias-const", str(args.bias_const), "--seed", "0",
              "--num-workers", str(args.workers), "--lr-policy", "manual", "--no-tencrop",
              "--log-every", "1", "--checkpoint-minutes", "600"]
    if args.device == "cpu":
        common += ["--backend", "reference"]
    start = time.perf_counter()
    _run(_python("trainer", "train", *common, *flags), log)
    train_s = time.perf_counter() - start
    report = run_dir / "evaluation.json"
    _run(_python("trainer", "evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"),
                 "--data", str(shards), "--num-workers", str(args.workers), "--json", str(report),
                 *(["--device", "cpu", "--backend", "reference"] if args.device == "cpu" else [])), log)
    model = json.loads(report.read_text())["models"][0]
    return {"top1_error": model["tencrop"]["top1_error"], "top5_error": model["tencrop"]["top5_error"],
            "center_top1_error": model["center"]["top1_error"], "train_seconds": round(train_s, 1),
            **run_store_facts(runs / "runs.db", f"ablation-{name}-{args.tag}")}


def run_store_facts(db: Path, run_name: str) -> dict:
    """The trainer's throughput and the config it recorded, read back from the run store."""
    from trainer import runstore as rs

    store = rs.RunStore(db)
    try:
        run = store.get_run_by_name(run_name)
        series = [p["value"] for p in store.metric_series(run["id"], rs.IMAGES_PER_SEC)]
        losses = [(p["step"], p["value"]) for p in store.metric_series(run["id"], rs.LOSS, max_points=100_000)]
    finally:
        store.close()
    steady = series[1:] or series
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
    return {"images_per_sec": statistics.median(steady) if steady else float("nan"), "config": config,
            "steps_to_leave_chance": steps_to_leave_chance(losses, int(config.get("num_classes") or 0))}


def steps_to_leave_chance(losses: list[tuple[int, float]], classes: int) -> int | None:
    """The first step whose trailing mean loss is CHANCE_MARGIN under ln(classes); None if never."""
    if classes < 2:
        return None
    import math

    bar = math.log(classes) - CHANCE_MARGIN
    for i in range(CHANCE_WINDOW, len(losses) + 1):
        window = [v for _, v in losses[i - CHANCE_WINDOW:i]]
        if sum(window) / CHANCE_WINDOW < bar:
            return losses[i - 1][0]
    return None


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "device": device}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="shard folder (default: build the demo corpus's shards)")
    p.add_argument("--workdir", type=Path, default=Path("bench-ablations"), help="runs and demo data go here")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=float, default=0.0625, help="AlexNet width multiplier (1: the paper's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--bias-const", type=float, default=0.1,
                   help="bias of conv2/4/5 and FC1/2 (the paper's 1 leaves small nets flat; see docs/design.md)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workers", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"ablations: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if "paper" not in names:
        names.insert(0, "paper")  # every ratio is against it
    args.tag = time.strftime("%Y%m%d-%H%M%S")
    args.workdir.mkdir(parents=True, exist_ok=True)
    shards = args.data or demo_shards(args.workdir)
    runs = args.workdir / "runs"
    runs.mkdir(exist_ok=True)
    results = {}
    for name in names:
        flags, recorded = VARIANTS[name]
        r = train_and_evaluate(name, flags, args, shards, runs)
        if recorded and r["config"].get(recorded[0]) != recorded[1]:
            raise SystemExit(f"ablations: run {name} recorded {recorded[0]}={r['config'].get(recorded[0])!r}, "
                             f"expected {recorded[1]!r}")
        results[name] = r
        print(f"{name:<13} top-1 {100 * r['top1_error']:5.1f}%  top-5 {100 * r['top5_error']:5.1f}%  "
              f"center top-1 {100 * r['center_top1_error']:5.1f}%  {r['images_per_sec']:8.1f} images/s  "
              f"leaves chance at step {r['steps_to_leave_chance']}  ({r['train_seconds']:.0f} s)", flush=True)
    print_result(results, args)
    return 0


def print_result(results: dict, args) -> None:
    paper = results["paper"]
    figures, ratios = {}, {}
    for name, r in results.items():
        figures[f"{name}_top1_error"] = round(r["top1_error"], 4)
        figures[f"{name}_top5_error"] = round(r["top5_error"], 4)
        figures[f"{name}_images_per_sec"] = round(r["images_per_sec"], 2)
        figures[f"{name}_steps_to_leave_chance"] = r["steps_to_leave_chance"]
        if name == "paper":
            continue
        if paper["top1_error"] > 0:
            ratios[f"{name}_top1_error_over_paper"] = round(r["top1_error"] / paper["top1_error"], 3)
        if r["images_per_sec"] > 0:
            ratios[f"paper_images_per_sec_over_{name}"] = round(paper["images_per_sec"] / r["images_per_sec"], 3)
    info = machine(args.device) | {"width": args.width, "epochs": args.epochs, "batch_size": args.batch_size}
    print(json.dumps({"bench": "ablations", "machine": info, "figures": figures, "ratios": ratios}))


if __name__ == "__main__":
    sys.exit(main())
