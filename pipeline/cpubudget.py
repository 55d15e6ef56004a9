"""A node's CPU budget: how many loader threads and processes a rank may start.

Each rank's loader starts, besides the trainer's own process:
  * DALI: `--num-workers` threads in the pipeline and one feed thread (`pipeline.prefetch`'s
    producer: the batch's reads, labels and draw; since issue 25 no source processes);
  * the reference loader: `--num-workers` worker processes.
`--num-workers 0` (auto) gives a rank the most of them that fit its share of the node's
usable cores, one core kept for the trainer, up to the measured best (8 DALI threads per
GPU; 4 otherwise). A rank's share is its affinity mask divided among the ranks that share
it: torchrun's LOCAL_WORLD_SIZE (one torchrun a node, as docs/cluster.md runs it under
Slurm and Kubernetes); a rank started alone (srun per GPU, no torchrun) keeps its mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# DALI threads per GPU by default: on an H100 (16 cores) 8 threads fed 23,235 images/s at
# batch 256, against 16,933 with 4 and 14,848 with 16 (benchmarks/README.md, GPU check); an
# 8-GPU node has 14-16 cores per GPU, and one stays with the trainer.
DALI_GPU_THREADS = 8
# Everything else (reference worker processes, DALI on the CPU): the earlier default.
OTHER_WORKERS = 4


FEED_THREADS = 1  # the DALI loader's producer thread (pipeline.prefetch)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class CpuBudget:
    backend: str
    cores: int  # usable by this process (its affinity mask)
    ranks: int  # ranks on the node
    share: int  # this rank's cores
    workers: int  # --num-workers: DALI threads, or reference processes

    @property
    def processes(self) -> int:
        """Processes the rank's loader starts."""
        return 0 if self.backend == "dali" else self.workers

    @property
    def threads(self) -> int:
        return self.workers + FEED_THREADS if self.backend == "dali" else 0

    @property
    def used(self) -> int:
        """Cores the rank asks for: its loader's threads and processes, and itself."""
        return self.threads + self.processes + 1

    def line(self) -> str:
        what = (f"{self.workers} DALI threads + the feed thread" if self.backend == "dali"
                else plural(self.processes, "loader process"))
        over = "" if self.used * self.ranks <= self.cores else ", OVER the node's cores"
        return (f"CPU budget: {self.cores} cores / {plural(self.ranks, 'rank')} on this node = {self.share} a rank; "
                f"each rank {what} + the trainer = {self.used}{over}")


def plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}{'es' if what.endswith('s') else 's'}"


def rank_share(cores: int, ranks: int) -> int:
    return max(1, cores // max(1, ranks))


def cpu_budget(backend: str, device: str, ranks_on_node: int = 1, workers: int = 0) -> CpuBudget:
    """The budget of a rank on a node of `ranks_on_node` ranks; `workers` 0 means auto."""
    cores = usable_cores()
    share = rank_share(cores, ranks_on_node)
    if not workers:
        dali = backend == "dali"
        cap = DALI_GPU_THREADS if dali and not str(device).startswith("cpu") else OTHER_WORKERS
        room = share - 1  # one core stays with the trainer
        fits = [n for n in range(1, cap + 1) if n + (FEED_THREADS if dali else 0) <= room]
        workers = max(fits, default=1)
    return CpuBudget(backend, cores, max(1, ranks_on_node), share, workers)
