"""`make_loader`: the one constructor the trainer calls, above both backends.

Used by `trainer train` and `trainer evaluate`. The backends (`pipeline/dali.py`,
`pipeline/reference.py`) share `pipeline/base.py`; this module picks one, falls back to
the reference loader where DALI does not import, and resolves `--backend auto` and
`--num-workers 0` (auto).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from pipeline.base import BACKENDS, BaseLoader, LoaderConfig
from pipeline.cpubudget import DALI_GPU_THREADS, OTHER_WORKERS, cpu_budget  # noqa: F401 (re-exported)
from pipeline.reference import ReferenceLoader

log = logging.getLogger(__name__)
__all__ = ["BACKENDS", "LoaderConfig", "auto_workers", "make_loader", "resolve_backend"]


def auto_workers(backend: str, device: str, ranks_on_node: int = 1) -> int:
    """What `--num-workers 0` (auto) means for a rank: the most loader threads and processes
    that fit its share of the node's cores (`pipeline.cpubudget`)."""
    return cpu_budget(backend, device, ranks_on_node).workers


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
