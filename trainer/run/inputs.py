"""What `trainer train` refuses before it starts: each a one-line error (exit 2) and
nothing written but the run dir's probe.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from preprocess.contract import Manifest, require_shards
from trainer.run.config import TrainConfig
from trainer.run.session import TrainError


def check_inputs(cfg: TrainConfig) -> TrainConfig:
    """Bad input ends here with one line: no data, a contradicting class count, a run dir
    that cannot be written."""
    return read_inputs(cfg)[0]


def read_inputs(cfg: TrainConfig) -> tuple[TrainConfig, Manifest]:
    """`check_inputs`, and the data's dataset.json as it read it: the run's one read."""
    if cfg.device != "auto":
        from trainer.run.distributed import check_device

        check_device(cfg.device)  # before the run dir is made
    cfg = cfg.resolved()
    manifest = Manifest.read(cfg.data)
    require_shards(cfg.data, "train")
    if cfg.val_every or cfg.tencrop:
        require_shards(cfg.data, "val")
    n = manifest.num_classes
    if cfg.num_classes and cfg.num_classes != n:
        raise TrainError(f"--num-classes {cfg.num_classes} contradicts {cfg.data}/dataset.json, which has {n} classes")
    if cfg.freeze_features and not cfg.init_from:
        raise TrainError("--freeze-features keeps the conv layers of pre-trained weights: give --init-from CHECKPOINT")
    if cfg.batch_size < 1 or cfg.epochs < 1 or cfg.control_every < 1:
        raise TrainError("--batch-size, --epochs and --control-every must be positive")
    if cfg.warmup_epochs and (cfg.lr_scaling != "linear" or cfg.warmup_epochs < 0):
        raise TrainError("--warmup-epochs ramps the LR up to the scaled one: give it with --lr-scaling linear, >= 0")
    probe = Path(cfg.run_dir) / "checkpoints" / f".probe{time.time_ns()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TrainError(f"cannot write to the run dir {cfg.run_dir}: {e.strerror or e}") from None
    return dataclasses.replace(cfg, num_classes=n), manifest
