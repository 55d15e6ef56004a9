"""The paper's Figure 3: the first layer's kernels as an image (a run's filters.png; the
subcommand `trainer filters` is `trainer.analysis.filters`).

Each 11x11x3 kernel becomes one RGB tile, scaled to its own range (min -> black, max ->
white), because the kernels' magnitudes differ by an order of magnitude and a common scale
would leave most tiles grey. The kernels are drawn in groups: with `groups=2` the first half
feeds the first column of conv2 (the paper's GPU 1) and the second half the other, so the
figure shows the two blocks apart, as in the paper, where one block learns colour-agnostic
kernels and the other colour blobs. The trainer calls `save_filters_png` at each checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.tempfiles import replace_atomically, sweep_dead

BACKGROUND = 255  # white gaps, as in the paper's figure
TILE_GAP = 1  # pixels between tiles (in tile units scaled by `scale`)
BLOCK_GAP = 4  # extra pixels between the groups' blocks
MAX_COLUMNS = 16  # the paper draws 48 kernels per block as 3 rows of 16


@dataclass(frozen=True)
class Box:
    """Where kernel `index` lies in the image: rows top:top+size, columns left:left+size."""

    index: int
    top: int
    left: int
    size: int


def grid_layout(n_kernels: int, groups: int, kernel_size: int, scale: int) -> tuple[list[Box], int, int]:
    """Tile boxes for every kernel and the image's (height, width).

    Groups are stacked vertically, each a block of up to MAX_COLUMNS columns.
    """
    groups = groups if groups > 0 and n_kernels % groups == 0 else 1
    per_group = n_kernels // groups
    columns = min(MAX_COLUMNS, per_group)
    rows = math.ceil(per_group / columns)
    tile = kernel_size * scale
    step = tile + TILE_GAP
    block_height = rows * step - TILE_GAP
    width = columns * step - TILE_GAP
    boxes = []
    for k in range(n_kernels):
        group, within = divmod(k, per_group)
        row, col = divmod(within, columns)
        top = group * (block_height + BLOCK_GAP) + row * step
        boxes.append(Box(k, top, col * step, tile))
    height = groups * block_height + (groups - 1) * BLOCK_GAP
    return boxes, height, width


def kernel_tiles(weight: np.ndarray) -> np.ndarray:
    """(K, C, h, w) weights -> (K, h, w, 3) uint8, each kernel scaled to its own range."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights of shape (K, C, h, w), got {w.shape}")
    if w.shape[1] == 1:  # a grey-input network: draw it grey
        w = np.repeat(w, 3, axis=1)
    w = w[:, :3].transpose(0, 2, 3, 1)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - low
    # A constant kernel (dead, or freshly zeroed) has no range: draw it mid-grey.
    scaled = np.where(span > 0, (w - low) / np.where(span > 0, span, 1.0), 0.5)
    return np.round(scaled * 255).astype(np.uint8)


def filter_grid(weight: np.ndarray, groups: int, scale: int = 3) -> tuple[np.ndarray, list[Box]]:
    """The figure as an (H, W, 3) uint8 array, and the box of each kernel's tile."""
    tiles = kernel_tiles(weight)
    n, size = tiles.shape[0], tiles.shape[1]
    boxes, height, width = grid_layout(n, groups, size, scale)
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    for box, tile in zip(boxes, tiles):
        big = tile.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest: keep pixels crisp
        image[box.top : box.top + box.size, box.left : box.left + box.size] = big
    return image, boxes


def model_groups(model) -> int:
    """How many blocks conv1's kernels split into: the groups of the layer that reads them."""
    groups = getattr(model, "groups", None)
    if groups is None:
        conv2 = getattr(model, "conv2", None)
        groups = getattr(conv2, "groups", 1)
    return int(groups)


def save_filters_png(model, path: str | Path, scale: int = 3) -> Path:
    """Write the conv1 kernels of `model` (an AlexNet, possibly DDP-wrapped) to a PNG."""
    from PIL import Image

    model = getattr(model, "module", model)
    weight = model.conv1.weight.detach().float().cpu().numpy()
    image, _ = filter_grid(weight, model_groups(model), scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead(path.parent, target=path.name)  # a former writer's, killed mid-write
    # Renamed into place: the page may be reading the previous one.
    return replace_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
