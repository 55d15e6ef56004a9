"""Helpers shared by the evaluation tests: configs and checkpoints of tiny models."""

from __future__ import annotations

from pathlib import Path

import torch

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 4, 3
WIDTH = 0.125


def train_config(data: Path, run_dir: Path, **model) -> dict:
    from trainer.run.config import TrainConfig

    return TrainConfig(data=str(data), run_dir=str(run_dir), num_classes=CLASSES, width=WIDTH, **model).to_dict()


def write_checkpoint(path: Path, model: torch.nn.Module, config: dict, step: int = 0,
                     class_digest: str | None = None) -> Path:
    """A checkpoint record as `trainer train` writes it; its class digest is that of the
    shards its config names (pass one to write a checkpoint of another class list)."""
    from trainer.run.ckptfile import pack, write_checkpoint

    if class_digest is None and config.get("data"):
        from preprocess.contract import class_digest as digest_of, load_manifest

        class_digest = digest_of(load_manifest(config["data"])["classes"])
    record = pack(model=model.state_dict(), optimizer={}, policy={}, lr=0.01, lr_history=[], epoch=1,
                  epoch_step=0, step=step, rng=[], data_state=[], config=config, applied_commands=[],
                  class_digest=class_digest)
    return write_checkpoint(path, record)


def train_inputs(data: Path, config: dict) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from trainer.analysis.neighbors import ShardImages

    rows = list(ShardImages(data, "train", config))
    return torch.stack([r[0] for r in rows]), torch.tensor([r[5] for r in rows]), [r[1] for r in rows]
