"""The run's layout over its ranks, said once at start: world size, the rank's device, the
global SGD batch and each rank's share of it, and the node's CPU budget
(`pipeline.cpubudget`). Rank 0 prints it as the run's first line."""

from __future__ import annotations

from trainer.run.config import TrainConfig
from trainer.run.distributed import World
from trainer.run.loaders import budget_line, ranks_on_node


def start_line(cfg: TrainConfig, world: World) -> str:
    per_rank = cfg.batch_size // world.world_size
    ranks = f"{world.world_size} ranks ({ranks_on_node()} on this node)" if world.distributed else "1 process"
    return (f"trainer: {ranks} on {world.device.type}, batch {cfg.batch_size} "
            f"({per_rank} a rank); {budget_line(cfg, world)}")
