"""The run's layout over its ranks, said once at start: world size, the rank's device, the
global SGD batch and each rank's share of it, and the node's CPU budget
(`pipeline.cpubudget`). Rank 0 prints it as the run's first line, and one warning when
each rank's share of the global batch is small."""

from __future__ import annotations

from trainer.run.config import TrainConfig
from trainer.run.distributed import World
from trainer.run.loaders import budget_line, rank_batch, ranks_on_node


SMALL_RANK_BATCH = 32  # under it a GPU is under-used and the all-reduce weighs more per image


def small_batch_warning(cfg: TrainConfig, world: World) -> str | None:
    per_rank = rank_batch(cfg.batch_size, world.world_size)
    if not world.distributed or per_rank >= SMALL_RANK_BATCH:
        return None
    return (f"trainer: warning: --batch-size {cfg.batch_size} is the global SGD batch: over {world.world_size} "
            f"ranks each trains {per_rank} images a step (under {SMALL_RANK_BATCH}), so a GPU is under-used and "
            f"the gradient all-reduce is paid every {per_rank} images; for throughput raise --batch-size "
            f"(e.g. {SMALL_RANK_BATCH * world.world_size}), a non-paper choice")


def start_line(cfg: TrainConfig, world: World) -> str:
    per_rank = rank_batch(cfg.batch_size, world.world_size)
    ranks = f"{world.world_size} ranks ({ranks_on_node()} on this node)" if world.distributed else "1 process"
    grad = ", gradients all-reduced in bf16" if cfg.grad_bf16 and world.distributed else ""
    if cfg.lr_scaling == "linear":
        grad += (f", LR {cfg.lr * cfg.batch_size / 128:g} = {cfg.lr:g} x {cfg.batch_size}/128 (--lr-scaling linear"
                 f"{f', warm-up {cfg.warmup_epochs} epochs' if cfg.warmup_epochs else ''}; not the paper's)")
    line = (f"trainer: {ranks} on {world.device.type}, batch {cfg.batch_size} "
            f"({per_rank} a rank){grad}; {budget_line(cfg, world)}")
    warning = small_batch_warning(cfg, world)
    return line + ("\n" + warning if warning else "")
