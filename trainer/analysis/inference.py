"""Trained models for the commands that use them: `trainer evaluate`, `filters`, `predict`,
`neighbors`.

    trainer predict --checkpoint runs/NAME/checkpoints/last.pt photo.jpg

Loading a checkpoint here checks it against what it will be used with and turns every
mismatch (not a checkpoint or damaged: `trainer.run.ckptfile`; weights that do not fit the
architecture its config names; a class count or class list other than the data's) into a
`CheckpointError` whose message is the one line the command prints. Single images are
prepared as the shards and the evaluation pipeline prepare them: shorter side 256, center
256x256, center 224x224 patch, mean subtracted.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import torch

from preprocess.contract import MANIFEST_NAME, DataError, Manifest
from trainer.run.ckptfile import (CheckpointError, class_change, class_note, describe_mismatch, load_checkpoint,
                                model_weights)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The AlexNet a checkpoint holds, in eval mode on `device`, and the checkpoint's config."""
    model, config, _ = _load(Path(path), device)
    return model, config


def _load(path: Path, device) -> tuple[torch.nn.Module, dict, dict]:
    from trainer.run.model import build_model, configure_cuda

    ckpt = load_checkpoint(path, warn=_warn)  # damaged or not ours: its one line
    state = model_weights(path, ckpt)
    config = ckpt["config"]
    try:
        model = build_model(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config does not describe an AlexNet ({exc})") from None
    mismatch = describe_mismatch(model, state)
    if mismatch:
        raise CheckpointError(f"{path} holds weights of another architecture than its config names: {mismatch}")
    model.load_state_dict(state)
    if torch.device(device).type == "cuda":
        configure_cuda()
    return model.to(device).eval(), config, ckpt


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def num_classes(model: torch.nn.Module) -> int:
    return int(getattr(model, "module", model).fc3.out_features)


def resolve_data_dir(data: str | None, config: dict, checkpoint: str | Path) -> Path:
    """`--data` if given, else the shard folder the checkpoint was trained on."""
    data = data or config.get("data")
    if not data:
        raise DataError(f"{checkpoint} does not name its shard folder: pass --data")
    return Path(data)


def load_models(paths: list[str], data: str | None, device) -> tuple[list, list[dict], Path, Manifest]:
    """Checkpoints for one data set: each must classify exactly the data's classes, in the
    same label order (the class list digest it recorded at training)."""
    loaded = [_load(Path(p), device) for p in paths]
    models, configs = [m for m, _, _ in loaded], [c for _, c, _ in loaded]
    data_dir = resolve_data_dir(data, configs[0], paths[0])
    manifest = Manifest.read(data_dir)
    classes, digest = manifest.num_classes, manifest.class_digest
    for p, (model, _, ckpt) in zip(paths, loaded):
        if num_classes(model) != classes:
            raise CheckpointError(f"{p} classifies {num_classes(model)} classes but "
                                  f"{data_dir / MANIFEST_NAME} lists {classes}")
        changed = class_change(ckpt, p, digest, data_dir / MANIFEST_NAME)
        if changed:
            raise CheckpointError(f"{changed}; pass --data with the shards it was trained on")
        note = class_note(ckpt, p, data_dir / MANIFEST_NAME)
        if note:
            _warn(note)
    return models, configs, data_dir, manifest




@functools.lru_cache(maxsize=4)
def _mean(data_dir: str, mean: str, image_size: int | None) -> np.ndarray:
    from pipeline.augment import mean_array
    from preprocess.contract import load_stats

    return mean_array(load_stats(data_dir, image_size), mean)


def center_input(image: np.ndarray, data_dir: Path, config: dict, manifest: Manifest | None = None) -> torch.Tensor:
    """(256, 256, 3) uint8 image -> (3, 224, 224) float32 center patch, mean subtracted as the
    evaluation pipeline does it (`pipeline.augment`: the run's mean image or channel mean).
    `manifest`: dataset.json as the command read it (else stats.npz's check reads it)."""
    from pipeline.augment import CENTER_OFFSET, augment_image

    mean = _mean(str(data_dir), config.get("mean") or "image", manifest.image_size if manifest else None)
    patch = augment_image(image, mean, CENTER_OFFSET, CENTER_OFFSET, False)
    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))


def prepare_image(path: str | Path) -> np.ndarray:
    """Any JPEG/PNG file -> the (256, 256, 3) uint8 image the shards would store for it."""
    from preprocess.image import Rejected, encode, prepare

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no image at {path}")
    try:
        pixels = prepare(path.read_bytes())
    except Rejected as exc:
        raise DataError(f"{path} cannot be used as an image ({exc})") from None
    # The shards hold JPEGs: pass the image through the same codec so it sees what training saw.
    return decode_stored(encode(pixels))


def image_input(path: str | Path, data_dir: Path, config: dict,
                manifest: Manifest | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(3, 224, 224) network input of an image file (center patch), and its 256 image."""
    image = prepare_image(path)
    return center_input(image, data_dir, config, manifest), image


def decode_stored(data: bytes) -> np.ndarray:
    """A shard's stored JPEG -> (256, 256, 3) uint8 RGB, decoded as the loaders decode it."""
    from pipeline.reference import decode_rgb

    return decode_rgb(data)


def make_eval_loader(data_dir: Path, split: str, world, flags, config: dict, manifest: Manifest):
    """Ten-crop batches of a split for this rank, through the trainer's one loader path
    (`trainer.run.loaders.loader_config`: `flags.batch_size` global, `flags.num_workers` 0
    auto), from the manifest the command read.

    The loader splits the split over ranks and pads the last batches; `valid` marks the
    padding, so every image is counted once over all ranks.
    """
    from pipeline.loader import make_loader
    from preprocess.contract import require_shards
    from trainer.run.loaders import loader_config

    require_shards(data_dir, split)  # a data dir without the split: the contract's one line
    return make_loader(loader_config(data_dir, split, "tencrop", world, batch_size=flags.batch_size,
                                     backend=flags.backend, num_workers=flags.num_workers, manifest=manifest,
                                     mean=config.get("mean") or "image"))
