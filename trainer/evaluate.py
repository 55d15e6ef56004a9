"""Top-1 and top-5 error of one or more checkpoints, as in the paper's Tables 1 and 2.

    trainer evaluate --checkpoint runs/a/checkpoints/last.pt [--checkpoint runs/b/...] \
        --data shards/ [--split val] [--json evaluation.json]
    torchrun --nproc-per-node G -m trainer evaluate ...      (same numbers, split over GPUs)

For every image of the split, exactly once: the center 224 patch, and the ten-patch average
(softmax averaged over the four corners, the center and their mirrors, section 4.1). With
several checkpoints also the ensemble: softmax averaged over the models (the paper's "5
CNNs"), per view. Each rank counts its errors; the counts are summed over ranks, and the
total must equal the split's size in `dataset.json`, or the command fails instead of
reporting a number over the wrong set of images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

VIEWS = ("tencrop", "center")
METRICS = ("top1_error", "top5_error")


def count_errors(probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C) probabilities -> [top-1 errors, top-5 errors] over the valid rows (float64)."""
    k = min(5, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    hit = top == labels[:, None]
    wrong1 = ~hit[:, 0] & valid
    wrong5 = ~hit.any(dim=1) & valid
    return torch.stack([wrong1.sum(), wrong5.sum()]).to(torch.float64)


def view_probs(model: torch.nn.Module, images: torch.Tensor, center_index: int) -> dict[str, torch.Tensor]:
    """Ten-crop batch (B, 10, 3, H, W) -> softmax of the center patch and the ten-patch mean."""
    b, n = images.shape[:2]
    probs = model(images.flatten(0, 1)).float().softmax(dim=1).view(b, n, -1)
    return {"tencrop": probs.mean(dim=1), "center": probs[:, center_index]}


@torch.no_grad()
def tally(models: list[torch.nn.Module], batches, device: torch.device, center_index: int) -> tuple[torch.Tensor, int]:
    """Error counts of shape (len(models) + 1, views, metrics); the last row is the ensemble.

    `batches` yields (images (B, 10, 3, H, W), labels (B,), valid (B,)); padding rows
    (valid False) are run through the models but never counted.
    """
    for m in models:
        m.eval()
    counts = torch.zeros(len(models) + 1, len(VIEWS), len(METRICS), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels, valid in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True).long()  # no-ops for the loader's
        valid = valid.to(device, non_blocking=True).bool()     # tensors, already there
        ensemble = {v: 0.0 for v in VIEWS}
        for i, model in enumerate(models):
            probs = view_probs(model, images, center_index)
            for j, view in enumerate(VIEWS):
                counts[i, j] += count_errors(probs[view], labels, valid)
                ensemble[view] = ensemble[view] + probs[view] / len(models)
        for j, view in enumerate(VIEWS):
            counts[-1, j] += count_errors(ensemble[view], labels, valid)
        seen += valid.sum()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        both = torch.cat([counts.flatten(), seen.view(1)])
        torch.distributed.all_reduce(both)
        counts, seen = both[:-1].view_as(counts), both[-1]
    return counts.cpu(), int(seen.item())


def summarize(counts: torch.Tensor, seen: int, checkpoints: list[str], split: str) -> dict:
    """The JSON report: error rates per checkpoint and, for several, of the ensemble."""

    def rates(row: torch.Tensor) -> dict:
        return {
            view: {metric: float(row[j, k]) / max(seen, 1) for k, metric in enumerate(METRICS)}
            for j, view in enumerate(VIEWS)
        }

    report = {
        "split": split,
        "count": seen,
        "models": [{"checkpoint": c, **rates(counts[i])} for i, c in enumerate(checkpoints)],
        "ensemble": None,
    }
    if len(checkpoints) > 1:
        report["ensemble"] = {"checkpoints": list(checkpoints), **rates(counts[-1])}
    return report


def format_table(report: dict) -> str:
    """Rows as in the paper's Table 2: "1 CNN" per checkpoint, then "N CNNs" for the ensemble."""
    split = report["split"]
    head = ["Model", f"Top-1 ({split})", f"Top-5 ({split})", "Top-1 center", "Top-5 center"]
    rows = [[f"1 CNN  {m['checkpoint']}", *_cells(m)] for m in report["models"]]
    if report["ensemble"]:
        rows.append([f"{len(report['models'])} CNNs (softmax averaged)", *_cells(report["ensemble"])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *map(line, rows)]
    out.append(
        f"{report['count']} {split} images, each counted once. Top-1/Top-5: softmax averaged over "
        "ten patches (four corners, center, and their mirrors); center: the center patch alone."
    )
    return "\n".join(out)


def _cells(entry: dict) -> list[str]:
    return [f"{100 * entry[v][m]:.1f}%" for v in VIEWS for m in METRICS]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a checkpoint of `trainer train`; repeat it for an ensemble")
    parser.add_argument("--data", help="shard folder (default: the one in the first checkpoint's config)")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--json", default=None, help="report file (default: evaluation-SPLIT.json)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (x10 patches)")
    parser.add_argument("--backend", choices=("dali", "reference"), default=None,
                        help="data loader (default: dali on a GPU, reference otherwise)")
    parser.add_argument("--workers", type=_positive, default=4, help="loader worker processes (>= 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from preprocess import exitcodes
    from preprocess.contract import DataError
    from trainer.inference import CheckpointError, distributed_setup, load_models, make_eval_loader
    from trainer.tempfiles import replace_atomically, sweep

    rank, world, device = distributed_setup(args.device)
    try:
        models, configs, data_dir, manifest = load_models(args.checkpoint, args.data, device)
        means = {c.get("mean") or "image" for c in configs}
        if len(means) > 1:  # one loader feeds every model: their inputs must be prepared alike
            raise CheckpointError(f"the checkpoints subtract different means ({', '.join(sorted(means))}): "
                                  "evaluate them separately")
        loader, center_index = make_eval_loader(
            data_dir, args.split, args.batch_size, args.backend, device, rank, world, args.workers, configs[0],
        )
        counts, seen = tally(models, loader, device, center_index)
    except (CheckpointError, DataError) as exc:
        if rank == 0:
            print(f"trainer evaluate: {exc}")
        return exitcodes.for_error(exc)
    expected = int(manifest.get("splits", {}).get(args.split, {}).get("count", seen))
    if seen != expected:  # damaged samples are masked by the loader: a partial count is no result
        if rank == 0:
            print(f"trainer evaluate: counted {seen} {args.split} images but dataset.json lists {expected}; "
                  f"check the shards with `preprocess verify {data_dir}`")
        return 3
    if rank != 0:
        return 0
    report = summarize(counts, seen, args.checkpoint, args.split)
    report["data"] = str(data_dir)
    print(format_table(report))
    path = Path(args.json or f"evaluation-{args.split}.json")
    sweep(path.parent, path.name)  # a former run's, killed mid-write
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {path}")
    return 0
