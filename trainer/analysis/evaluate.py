"""Top-1 and top-5 error of one or more checkpoints, as in the paper's Tables 1 and 2.

    trainer evaluate --checkpoint runs/a/checkpoints/last.pt [--checkpoint runs/b/...] \
        --data shards/ [--split val] [--json evaluation.json]
    torchrun --nproc-per-node G -m trainer evaluate ...      (same numbers, split over GPUs)

For every image of the split, exactly once: the center 224 patch, and the ten-patch average
(softmax averaged over the four corners, the center and their mirrors, section 4.1). With
several checkpoints also the ensemble: softmax averaged over the models (the paper's "5
CNNs"), per view. The models may differ in architecture (`--extra-conv`, `--groups`) as long
as they classify the same classes. Table 2's rows: a net fine-tuned from another run's
weights (`trainer train --init-from`, the paper's pre-trained nets) is starred ("1 CNN*");
a list that mixes plain and starred nets also gets the plain nets' own ensemble, so five
plain and two pre-trained checkpoints print "1 CNN", "5 CNNs", "1 CNN*" and "7 CNNs*".

The counting is `trainer.run.validation`'s, the code of the run's own validation, with its
precision rule, so a checkpoint's errors here are the ones its run logged. Each rank counts
its errors; the counts are summed over ranks, and the total must equal the split's size in
`dataset.json`, or the command fails instead of reporting a number over the wrong set of
images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from common import argtypes, exitcodes
from preprocess.contract import MANIFEST_NAME
from trainer.run.loaders import add_loader_arguments
from trainer.run.validation import METRICS, VIEWS, config_precision, rates, tally


def table_ensembles(pretrained: list[bool]) -> list[list[int]]:
    """The ensembles Table 2 reports, as member lists: the plain nets alone where the list
    mixes plain and pre-trained ones ("5 CNNs" beside "7 CNNs*"), then every net."""
    plain = [i for i, p in enumerate(pretrained) if not p]
    return ([plain] if any(pretrained) and len(plain) > 1 else []) + [list(range(len(pretrained)))]


def summarize(counts: torch.Tensor, seen: int, checkpoints: list[str], split: str,
              labels: list[str] | None = None, pretrained: list[bool] | None = None) -> dict:
    """The JSON report: error rates per checkpoint and, for several, of the ensembles
    (`ensemble`: every model; `ensembles`: each of `table_ensembles`, with its Table 2 name)."""
    labels = labels or list(checkpoints)
    pretrained = pretrained or [False] * len(checkpoints)
    groups = table_ensembles(pretrained)
    report = {
        "split": split,
        "count": seen,
        "models": [{"checkpoint": c, "label": labels[i], "name": _name([i], pretrained), **rates(counts[i], seen)}
                   for i, c in enumerate(checkpoints)],
        "ensemble": None,
        "ensembles": [],
    }
    if len(checkpoints) > 1:
        report["ensembles"] = [{"name": _name(g, pretrained), "checkpoints": [checkpoints[i] for i in g],
                                **rates(counts[len(checkpoints) + e], seen)} for e, g in enumerate(groups)]
        report["ensemble"] = {k: v for k, v in report["ensembles"][-1].items() if k != "name"}
    return report


def _name(members: list[int], pretrained: list[bool]) -> str:
    """Table 2's row name: "1 CNN", "5 CNNs", "1 CNN*", "7 CNNs*" (* any member pre-trained)."""
    star = "*" if any(pretrained[i] for i in members) else ""
    return f"1 CNN{star}" if len(members) == 1 else f"{len(members)} CNNs{star}"


def format_table(report: dict) -> str:
    """Rows as in the paper's Table 2: each net ("1 CNN", "1 CNN*"), then the ensembles."""
    split = report["split"]
    head = ["Model", f"Top-1 ({split})", f"Top-5 ({split})", "Top-1 center", "Top-5 center"]
    models = sorted(report["models"], key=lambda m: m["name"])  # plain nets first, as the paper
    rows = [[f"{m['name']:<6} {m['label']}", *_cells(m)] for m in models]
    for e in report.get("ensembles", []):
        rows.append([f"{e['name']:<6} (softmax averaged)", *_cells(e)])
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a checkpoint of `trainer train`; repeat it for an ensemble")
    parser.add_argument("--label", action="append", default=None,
                        help="a name for each --checkpoint in the table, in the same order (default: its path)")
    parser.add_argument("--data", help="shard folder (default: the one in the first checkpoint's config)")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--json", default=None, help="report file (default: evaluation-SPLIT.json)")
    add_loader_arguments(parser, 64, "images (x10 patches)")
    parser.add_argument("--backend", choices=("dali", "reference"), default=None,
                        help="data loader (default: dali on a GPU, reference otherwise)")
    parser.add_argument("--device", type=argtypes.device, default=None, help="cpu, cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from common import exitcodes
    from preprocess.contract import DataError
    from trainer.run.distributed import setup
    from trainer.analysis.inference import CheckpointError, load_models, make_eval_loader
    from common.tempfiles import replace_atomically, sweep_dead

    if args.label and len(args.label) != len(args.checkpoint):
        print(f"trainer evaluate: {len(args.label)} --label for {len(args.checkpoint)} --checkpoint: give one each")
        return 2
    joined = setup(args.device)
    rank, device = joined.rank, joined.device
    try:
        models, configs, data_dir, manifest = load_models(args.checkpoint, args.data, device)
        means = {c.get("mean") or "image" for c in configs}
        if len(means) > 1:  # one loader feeds every model: their inputs must be prepared alike
            raise CheckpointError(f"the checkpoints subtract different means ({', '.join(sorted(means))}): "
                                  "evaluate them separately")
        loader = make_eval_loader(data_dir, args.split, joined, args, configs[0], manifest)
        # Each net runs as its run trained and validated it (`trainer.run.validation`'s rule).
        precisions = [config_precision(c, device) for c in configs]
        for model, p in zip(models, precisions):
            if p.channels_last:
                model.to(memory_format=torch.channels_last)
        pretrained = [bool(c.get("init_from")) for c in configs]
        counts, seen = tally(models, loader, device, precisions=precisions, ensembles=table_ensembles(pretrained),
                             group=joined.control_group)  # the trainer's group: the same sum
    except (CheckpointError, DataError) as exc:
        if rank == 0:
            print(f"trainer evaluate: {exc}")
        return exitcodes.for_error(exc)
    expected = manifest.split_count(args.split) if args.split in manifest.splits else seen
    if seen != expected:  # damaged samples are masked by the loader: a partial count is no result
        if rank == 0:
            print(f"trainer evaluate: counted {seen} {args.split} images but {MANIFEST_NAME} lists {expected}; "
                  f"check the shards with `preprocess verify {data_dir}`")
        return exitcodes.INCOMPLETE
    if rank != 0:
        return 0
    report = summarize(counts, seen, args.checkpoint, args.split, args.label, pretrained)
    report["data"] = str(data_dir)
    print(format_table(report))
    path = Path(args.json or f"evaluation-{args.split}.json")
    sweep_dead(path.parent, target=path.name)  # a former run's, killed mid-write
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {path}")
    return 0
