"""Checkpoints: `{run_dir}/checkpoints/epoch-NNN.pt` and `last.pt`, written atomically.

A checkpoint is a dict with at least: model, optimizer (the velocity), lr, lr_history,
epoch, step, rng (per rank), data_state (per rank), config, applied_commands, policy.
It is written to a temporary file, fsynced, and renamed, so a file with a final name is
always whole, even when the trainer is killed while writing.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

LAST = "last.pt"
_EPOCH_RE = re.compile(r"^epoch-(\d{3,})\.pt$")
REQUIRED_KEYS = ("model", "optimizer", "lr", "lr_history", "epoch", "step", "rng", "data_state",
                 "config", "applied_commands")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    # Our own files: they hold numpy RNG states and plain dicts, not only tensors.
    state = torch.load(Path(path), map_location=map_location, weights_only=False)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path} is not a trainer checkpoint (missing {missing})")
    return state


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain AlexNet under DDP and torch.compile wrappers (their state_dict keys differ)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointDir:
    """last.pt plus the last `keep` epoch checkpoints in `{run_dir}/checkpoints`."""

    def __init__(self, run_dir: str | Path, keep: int):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    @property
    def last(self) -> Path:
        return self.dir / LAST

    def epoch_path(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:03d}.pt"

    def epochs(self) -> list[Path]:
        found = [(int(m.group(1)), p) for p in self.dir.glob("epoch-*.pt") if (m := _EPOCH_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict, *, epoch_end: int | None = None) -> Path:
        """Write last.pt; at the end of an epoch also epoch-NNN.pt (a hard link to the same
        bytes where the file system allows, so the 0.5 GB are written once)."""
        if epoch_end is None:
            return save_checkpoint(self.last, state)
        path = save_checkpoint(self.epoch_path(epoch_end), state)
        tmp = self.dir / f".{LAST}.link{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            os.replace(tmp, self.last)
            _fsync_dir(self.dir)
        except OSError:
            save_checkpoint(self.last, state)
        for old in self.epochs()[:-self.keep] if self.keep > 0 else self.epochs():
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        if self.last.is_file():
            return self.last
        epochs = self.epochs()
        return epochs[-1] if epochs else None
