"""What both loader backends share: the config, the interface, and turning a batch into tensors.

`LoaderConfig` is the loader's one parameter list: `make_loader` takes it whole, so a new
option is a field here and nothing else. `parse_label`, `label_bound` and `warn_damaged`
are the one rule for a sample's label and the one report of a damaged sample, for the
loaders and for `pipeline.inorder` (the analysis tools' reader) alike.

`pipeline.make_loader` (`pipeline/loader.py`, used by `trainer train` and `trainer
evaluate`) builds one of the backends below it, each a `BaseLoader`: the epoch plan
(`pipeline/sharding.py`), `len`, `num_samples`, `set_epoch`, `state_dict` /
`load_state_dict`, and `finish`, which turns a decoded batch into the tensors the trainer
gets (dtype, layout, device, the `valid` mask, damaged rows). This module imports no
backend, so that neither backend imports the factory above it.

Which rows of a batch are real is decided here, in `finish`, and nowhere else: every batch
has the loader's batch size (a compiled step sees one shape all run), and a row that is not
a real sample is masked, never removed: in a train batch its label is DAMAGED (the loss's
`ignore_index`, `trainer.run.step`), in an eval batch `valid` is False (every count).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.augment import MEANS, MODES
from pipeline.sharding import EpochPlan, derive_seed, plan_epoch, rank_positions
from pipeline.splitindex import SplitIndex
from preprocess.contract import MANIFEST_NAME, SPLITS, Manifest, load_stats

log = logging.getLogger(__name__)
STATE_VERSION = 1
DAMAGED = -1  # label of a row that is no sample (its JPEG or label damaged): the loss ignores it
BACKENDS = ("dali", "reference")


@dataclass(frozen=True)
class LoaderConfig:
    """One rank's loader. `backend` "auto" is DALI on a GPU, the reference loader on the CPU."""

    data_dir: Path
    split: str = "train"
    mode: str = "train"
    batch_size: int = 128
    backend: str = "dali"
    device: str = "cpu"
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    num_workers: int = 2
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    lighting_std: float = 0.1
    mean: str = "image"
    # dataset.json as the command read it once (`trainer.run.loaders`); None: the loader reads it
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "device", str(self.device))  # a torch.device is welcome too
        if self.backend not in (*BACKENDS, "auto"):
            raise ValueError(f"backend must be one of {BACKENDS} or auto, got {self.backend!r}")
        if self.split not in SPLITS or self.mode not in MODES or self.mean not in MEANS:
            raise ValueError(f"split/mode/mean must be in {SPLITS}/{MODES}/{MEANS}: {self}")
        if self.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype}")
        if self.batch_size < 1 or self.num_workers < 1:
            raise ValueError("batch_size and num_workers must be >= 1")


def parse_label(raw, classes: int | None = None) -> int:
    """A `.cls` payload (ASCII decimal) as int; DAMAGED where it is not one, or is outside
    0..classes-1 (a flipped digit must not reach the loss as an index past its last class)."""
    try:
        label = int(bytes(np.asarray(raw, np.uint8)).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return DAMAGED
    return label if label >= 0 and (classes is None or label < classes) else DAMAGED


def bad_label(raw) -> str:
    """Why a DAMAGED label is one, for the report."""
    return f"label {bytes(np.asarray(raw, np.uint8))[:12]!r} is not a class number"


def label_bound(data_dir: Path, manifest: Manifest | None = None) -> int | None:
    """The class count that bounds a label: from dataset.json (shards made by other tools,
    without one, are bounded below only); `manifest` where the caller read it already."""
    if manifest is not None:
        return manifest.num_classes
    return Manifest.read(data_dir).num_classes if (Path(data_dir) / MANIFEST_NAME).is_file() else None


def warn_damaged(name: str, why: str) -> None:
    """The one report of a damaged sample ("shard:key") left out of what is read."""
    log.warning("damaged sample %s (%s): skipped", name, why)


class BaseLoader:
    """The loader interface; subclasses implement `_iterate(start)` -> (batch number, batch)."""

    backend = "base"

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        manifest = cfg.manifest
        self.index = SplitIndex.read(cfg.data_dir, cfg.split, manifest)  # counts only; the reference loads offsets
        self.stats = load_stats(cfg.data_dir, manifest.image_size if manifest else None)
        self.num_classes = label_bound(cfg.data_dir, manifest)
        self.device = torch.device(cfg.device)
        # DALI has no bfloat16: both backends produce float32 and cast on the device.
        self._transfer_dtype = torch.float16 if cfg.dtype == torch.float16 else torch.float32
        self.epoch = 0
        self.skipped: list[str] = []  # "shard:key" of each damaged sample met, once
        self._consumed = 0  # batches of the current epoch handed out
        self._resume: dict | None = None  # a loaded state not yet used by __iter__
        self._plan0 = self.plan(0)

    # -- the epoch ---------------------------------------------------------------------
    def plan(self, epoch: int | None = None) -> EpochPlan:
        c = self.cfg
        return plan_epoch(
            self.index.sizes,
            train=c.mode == "train",
            batch_size=c.batch_size,
            rank=c.rank,
            world_size=c.world_size,
            seed=c.seed,
            epoch=self.epoch if epoch is None else epoch,
        )

    def epoch_seed(self, plan_salt: int) -> int:
        return derive_seed(self.cfg.seed, self.epoch, self.cfg.rank, plan_salt)

    def epoch_positions(self, plan: EpochPlan) -> np.ndarray:
        """The epoch-sequence positions this rank reads, batch after batch: one order for
        both backends."""
        return rank_positions(plan, self.cfg.batch_size, self.cfg.mode == "train", self.epoch_seed(3))

    def __len__(self) -> int:
        return self._plan0.num_batches

    @property
    def num_samples(self) -> int:
        return self._plan0.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration runs; a loaded state for this epoch is kept."""
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None
        self.epoch = int(epoch)

    def __iter__(self):
        start = self._resume["batch"] if self._resume is not None else 0
        self._consumed = start
        for b, batch in self._iterate(start):
            self._consumed = b + 1
            yield batch
        self._resume = None

    # -- resume ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        c = self.cfg
        return {
            "version": STATE_VERSION,
            "backend": self.backend,
            "epoch": self.epoch,
            "batch": self._consumed,
            "seed": c.seed,
            "rank": c.rank,
            "world_size": c.world_size,
            "batch_size": c.batch_size,
            "skipped": list(self.skipped),
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        c = self.cfg
        for key in ("seed", "world_size", "batch_size", "rank"):
            if state[key] != getattr(c, key):
                raise ValueError(f"loader state has {key}={state[key]}, this loader {getattr(c, key)}")
        self.epoch = int(state["epoch"])
        self.skipped = list(state.get("skipped", []))
        self._resume = dict(state)
        self._consumed = int(state["batch"])

    def _take_resume_checkpoint(self, start: int) -> str | None:
        state, self._resume = self._resume, None
        if start and state is not None and state.get("backend") == self.backend:
            return state.get(self.backend)
        return None

    def _extra_state(self) -> dict:
        return {}

    def report_damaged(self, name: str, why: str) -> None:
        """A sample left out of its batch ("shard:key"): said each time, kept once in `skipped`."""
        warn_damaged(name, why)
        if name not in self.skipped:
            self.skipped.append(name)

    def _iterate(self, start: int):
        raise NotImplementedError

    # -- batches -----------------------------------------------------------------------
    def finish(self, images: torch.Tensor, labels: torch.Tensor, plan: EpochPlan, b: int):
        """Final tensors: (images, labels) for train, (images, labels, valid) for eval.

        `images` arrive as (B, [10,] C, H, W), or (B, [10,] H, W, C) when channels_last.
        Damaged rows (label DAMAGED) keep their place, their pixels zeroed (whatever a failed
        decode left there must not reach a gradient as NaN): in train the loss ignores them
        by their label, in eval `valid` masks them, and the rows past this rank's share of
        the split, padding, too. The batch's shape never changes.
        """
        damaged = labels == DAMAGED
        if self.cfg.channels_last:
            images = images.movedim(-1, -3)  # NHWC memory, NCHW shape: torch's channels_last
        if images.dtype != self.cfg.dtype:
            images = images.to(self.cfg.dtype)
        if damaged.any():  # on the host's labels: no wait for the device
            rows = damaged.to(images.device).view(-1, *[1] * (images.dim() - 1))
            images = images.masked_fill(rows, 0)  # a new tensor: DALI's buffer is not ours to write
        if self.cfg.mode == "train":
            return images, self._to_device(labels)
        position = b * self.cfg.batch_size + torch.arange(len(labels))
        valid = (position < plan.size) & ~damaged
        return images, self._to_device(labels), self._to_device(valid)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        # From pageable memory even a non_blocking copy waits for the work queued on the
        # stream before it (on an H100 the trainer spent 42% of its time in next() for a
        # 1 KB label tensor); from pinned memory it is queued and returns at once.
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)
