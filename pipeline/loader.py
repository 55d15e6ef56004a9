"""`make_loader`: the one constructor the trainer calls, above both backends.

Used by `trainer train` and `trainer evaluate`. The backends (`pipeline/dali.py`,
`pipeline/reference.py`) share `pipeline/base.py`; this module picks one, falls back to
the reference loader where DALI does not import, and resolves `--num-workers 0` (auto).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from pipeline.base import BaseLoader, LoaderConfig
from pipeline.reference import ReferenceLoader

log = logging.getLogger(__name__)
BACKENDS = ("dali", "reference")


# DALI threads per GPU by default: on an H100 (16 cores) 8 threads fed 23,235 images/s at
# batch 256, against 16,933 with 4 and 14,848 with 16 (benchmarks/README.md, GPU check); an
# 8-GPU node has 14-16 cores per GPU, and one stays with the trainer.
DALI_GPU_THREADS = 8
# Everything else (reference worker processes, DALI on the CPU): the earlier default.
OTHER_WORKERS = 4


def auto_workers(backend: str, device: str, ranks_on_node: int = 1) -> int:
    """What `--num-workers 0` (auto) means for a rank: DALI on a GPU gets DALI_GPU_THREADS,
    capped by this rank's share of the usable cores less one for the trainer itself."""
    if backend != "dali" or device == "cpu":
        return OTHER_WORKERS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(DALI_GPU_THREADS, cores // max(1, ranks_on_node) - 1))


def make_loader(
    data_dir: str | Path,
    split: str = "train",
    mode: str = "train",
    batch_size: int = 128,
    backend: str = "dali",
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    num_workers: int = 2,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    lighting_std: float = 0.1,
    mean: str = "image",
) -> BaseLoader:
    """The loader for one rank; see the module docstring and `pipeline/__init__.py`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cfg = LoaderConfig(
        Path(data_dir), split, mode, batch_size, str(device), rank, world_size, seed,
        num_workers, dtype, channels_last, lighting_std, mean,
    )  # fmt: skip
    if backend == "dali":
        try:
            from pipeline.dali import DaliLoader
        except ImportError as err:
            log.warning("DALI is not importable (%s); using the reference loader", err)
        else:
            return DaliLoader(cfg)
    return ReferenceLoader(cfg)
