"""`trainer SUBCOMMAND ...`: one console script, one module per subcommand.

Subcommand modules are imported only when chosen, so `trainer serve` never imports torch.
Each module provides `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from common.argtypes import OneLineParser, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("trainer.run.train", "train AlexNet on prepared shards (torchrun for several GPUs)"),
    "serve": ("trainer.server.cli", "serve the progress page, the REST API and /metrics"),
    "token": ("trainer.server.token", "print the operator token of `trainer serve` (the one it generated, say)"),
    "evaluate": ("trainer.analysis.evaluate", "top-1/top-5 error of checkpoints: center crop, ten-crop, ensembles"),
    "filters": ("trainer.analysis.filters", "draw the conv1 kernels of a checkpoint (the paper's Figure 3)"),
    "predict": ("trainer.analysis.predict", "the five most probable classes of images (Figure 4, left)"),
    "neighbors": ("trainer.analysis.neighbors", "nearest training images in the last hidden layer (Figure 4, right)"),
    "experiment": ("trainer.analysis.experiment", "the paper's experiments, e.g. relu-vs-tanh (Figure 1)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: trainer COMMAND [options]   (trainer COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"trainer {command}", description=help_)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"trainer: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    parser, module = build_parser(command)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UsageError as err:  # a flag this machine cannot honour: argparse's one line and status
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
