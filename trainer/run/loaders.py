"""The one loader path of every command: a command's flags and its rank, turned into the
`pipeline.LoaderConfig` of a loader.

Used by `trainer train` (its train and validation loaders), `trainer evaluate` and
`trainer neighbors`. One meaning per flag, whichever command takes it:

  * `--batch-size` is the global batch, summed over all ranks; `rank_batch` divides it,
    and nothing else does;
  * `--num-workers` is DALI threads or reference loader processes per rank, 0 being auto:
    the most that fit the rank's share of the node's cores (`pipeline.cpubudget`'s rule);
  * `--backend auto` is DALI on a GPU, the reference loader on the CPU
    (`pipeline.loader.resolve_backend`).

The command reads dataset.json once and passes it (`manifest`): the loader then reads no
second copy of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import argtypes
from pipeline.base import LoaderConfig
from preprocess.contract import DataError, Manifest
from trainer.run.config import TrainConfig
from trainer.run.distributed import World

TENCROP_SHARE = 4  # the trainer's ten-crop validation batch: a quarter of the images, ten patches each


class BatchError(DataError):
    """A --batch-size that does not divide over the ranks: one line, exit 2."""

    exit_code = 2


def ranks_on_node() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global `--batch-size`: the one place it is divided."""
    if batch_size % world_size:
        raise BatchError(f"--batch-size {batch_size} is the global batch and does not divide over "
                         f"{world_size} ranks")
    return batch_size // world_size


def budget(backend: str, device_type: str, num_workers: int = 0):
    """This rank's `pipeline.cpubudget.CpuBudget`: `num_workers` 0 (auto) resolved by its rule."""
    from pipeline.cpubudget import cpu_budget

    return cpu_budget(backend, device_type, ranks_on_node(), num_workers)


def budget_line(cfg: TrainConfig, world: World) -> str:
    """The start line's account of the node's cores: what each rank's loader starts."""
    from pipeline.loader import resolve_backend

    return budget(resolve_backend(cfg.backend, world.device), world.device.type, cfg.num_workers).line()


def loader_config(data: str | Path, split: str, mode: str, world: World, *, batch_size: int,
                  backend: str | None = "auto", num_workers: int = 0, manifest: Manifest | None = None,
                  seed: int = 0, channels_last: bool = False, lighting_std: float = 0.0, mean: str = "image",
                  share: int = 1) -> LoaderConfig:
    """This rank's loader of `split` in `mode`, from the global `batch_size` (`share`: the
    loader takes 1/share of each rank's batch, the trainer's ten-crop validation). The
    device is the rank's own ("cuda:k"): a bare "cuda" would put every rank's DALI pipeline
    on GPU 0."""
    from pipeline.loader import resolve_backend

    backend = resolve_backend(backend or "auto", world.device)
    batch = max(1, rank_batch(batch_size, world.world_size) // share)
    workers = budget(backend, world.device.type, num_workers).workers
    return LoaderConfig(data, split, mode, batch_size=batch, backend=backend, device=world.device,
                        rank=world.rank, world_size=world.world_size, seed=seed, num_workers=workers,
                        channels_last=channels_last, lighting_std=lighting_std, mean=mean or "image",
                        manifest=manifest)


def train_loader_config(cfg: TrainConfig, world: World, split: str, mode: str, channels_last: bool,
                        manifest: Manifest | None = None) -> LoaderConfig:
    """`trainer train`'s loaders: its config's flags through `loader_config`."""
    return loader_config(cfg.data, split, mode, world, batch_size=cfg.batch_size, backend=cfg.backend,
                         num_workers=cfg.num_workers, manifest=manifest, seed=cfg.seed,
                         channels_last=channels_last, lighting_std=cfg.lighting_std, mean=cfg.mean,
                         share=TENCROP_SHARE if mode == "tencrop" else 1)


class _DeprecatedWorkers(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: --workers is deprecated, use --num-workers", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_loader_arguments(parser: argparse.ArgumentParser, batch_default: int, what: str) -> None:
    """--batch-size and --num-workers of an analysis command, with `trainer train`'s meaning."""
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=batch_default,
                        help=f"{what} per batch, summed over all ranks (as in `trainer train`)")
    workers = argtypes.count(0, argtypes.MAX_WORKERS)
    parser.add_argument("--num-workers", type=workers, default=0,
                        help="DALI threads or reference loader processes per rank; 0: auto (what fits the "
                             "rank's share of the node's cores, as in `trainer train`)")
    parser.add_argument("--workers", dest="num_workers", type=workers, action=_DeprecatedWorkers,
                        help=argparse.SUPPRESS)  # the former name, kept for scripts
