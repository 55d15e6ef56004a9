"""`trainer filters`: draw the conv1 kernels of a checkpoint (the paper's Figure 3).

The drawing is `trainer.run.filters`', the same code that writes a run's filters.png.
"""

from __future__ import annotations

import argparse

from common import argtypes, exitcodes
from trainer.analysis.inference import CheckpointError, load_model
from trainer.run.filters import model_groups, save_filters_png


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `trainer train`")
    parser.add_argument("-o", "--output", default="filters.png", help="PNG to write (default: filters.png)")
    parser.add_argument("--scale", type=argtypes.count(1, 64), default=3, help="pixels per kernel weight (default: 3)")


def run(args: argparse.Namespace) -> int:
    try:
        model, _ = load_model(args.checkpoint, device="cpu")
    except CheckpointError as exc:
        print(f"trainer filters: {exc}")
        return exitcodes.for_error(exc)
    path = save_filters_png(model, args.output, args.scale)
    n = model.conv1.weight.shape[0]
    print(f"wrote {path}: {n} conv1 kernels in {model_groups(model)} block(s)")
    return 0
