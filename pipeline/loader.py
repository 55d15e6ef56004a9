"""`make_loader`: the one constructor the trainer calls, above both backends.

Used by `trainer train` and `trainer evaluate`. The backends (`pipeline/dali.py`,
`pipeline/reference.py`) share `pipeline/base.py`; this module picks one, falls back to
the reference loader where DALI does not import, and resolves `--backend auto` and
`--num-workers 0` (auto).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

from pipeline.base import BACKENDS, BaseLoader, LoaderConfig
from pipeline.reference import ReferenceLoader

log = logging.getLogger(__name__)
__all__ = ["BACKENDS", "LoaderConfig", "auto_workers", "make_loader", "resolve_backend"]


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


def resolve_backend(backend: str, device: str | torch.device) -> str:
    """The one `auto` rule, for `trainer train` and `trainer evaluate` alike: DALI on a GPU,
    the reference loader on the CPU."""
    if backend != "auto":
        return backend
    return "dali" if torch.device(device).type == "cuda" else "reference"


def make_loader(cfg: LoaderConfig | str | Path, **fields) -> BaseLoader:
    """The loader for one rank: `make_loader(LoaderConfig(...))`, or, in short, a data dir
    and LoaderConfig's fields as keywords (fields given with a config replace its own)."""
    if isinstance(cfg, LoaderConfig):
        cfg = dataclasses.replace(cfg, **fields) if fields else cfg
    else:
        cfg = LoaderConfig(cfg, **fields)
    if resolve_backend(cfg.backend, cfg.device) == "dali":
        try:
            from pipeline.dali import DaliLoader
        except ImportError as err:
            log.warning("DALI is not importable (%s); using the reference loader", err)
        else:
            return DaliLoader(cfg)
    return ReferenceLoader(cfg)
