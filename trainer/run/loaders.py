"""The trainer's config and its rank, turned into the `pipeline.LoaderConfig` of a loader.

Used by `trainer.run.train.Trainer` for its train and validation loaders.
"""

from __future__ import annotations

import os

from pipeline.base import LoaderConfig
from trainer.run.config import TrainConfig
from trainer.run.distributed import World


def ranks_on_node() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def budget_line(cfg: TrainConfig, world: World) -> str:
    """The start line's account of the node's cores: what each rank's loader starts."""
    from pipeline.cpubudget import cpu_budget
    from pipeline.loader import resolve_backend

    backend = resolve_backend(cfg.backend, world.device)
    return cpu_budget(backend, world.device.type, ranks_on_node(), cfg.num_workers).line()


def loader_config(cfg: TrainConfig, world: World, split: str, mode: str, channels_last: bool) -> LoaderConfig:
    """This rank's loader of `split` in `mode`. The device is the rank's own ("cuda:k"): a
    bare "cuda" would put every rank's DALI pipeline on GPU 0."""
    from pipeline.loader import auto_workers, resolve_backend

    backend = resolve_backend(cfg.backend, world.device)
    per_rank = cfg.batch_size // world.world_size
    batch = per_rank if mode != "tencrop" else max(1, per_rank // 4)
    workers = cfg.num_workers or auto_workers(backend, world.device.type, ranks_on_node())
    return LoaderConfig(cfg.data, split, mode, batch_size=batch, backend=backend, device=world.device,
                        rank=world.rank, world_size=world.world_size, seed=cfg.seed, num_workers=workers,
                        channels_last=channels_last, lighting_std=cfg.lighting_std, mean=cfg.mean)
