"""The trainer's config and its rank, turned into `pipeline.make_loader`'s arguments.

Used by `trainer.train.Trainer` for its train and validation loaders.
"""

from __future__ import annotations

import os

from trainer.config import TrainConfig
from trainer.distributed import World


def loader_options(cfg: TrainConfig, world: World, split: str, mode: str, backend: str, channels_last: bool) -> dict:
    """`pipeline.make_loader`'s arguments for this rank. The device is the rank's own
    ("cuda:k"): a bare "cuda" would put every rank's DALI pipeline on GPU 0."""
    from pipeline.loader import auto_workers

    per_rank = cfg.batch_size // world.world_size
    batch = per_rank if mode != "tencrop" else max(1, per_rank // 4)
    workers = cfg.num_workers or auto_workers(backend, world.device.type, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return dict(data_dir=cfg.data, split=split, mode=mode, batch_size=batch, backend=backend,
                device=str(world.device), rank=world.rank, world_size=world.world_size, seed=cfg.seed,
                num_workers=workers, channels_last=channels_last, lighting_std=cfg.lighting_std,
                mean=cfg.mean)
