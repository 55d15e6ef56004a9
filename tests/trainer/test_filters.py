"""Figure 3: `trainer filters` and `save_filters_png`."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from trainer.run.filters import BACKGROUND, filter_grid, grid_layout, kernel_tiles, model_groups, save_filters_png
from trainer.run.model import AlexNet


def _tiles_in_png(path, weight, groups, scale=3):
    """Read the PNG back and match every tile box against its own kernel, scaled alone."""
    image = np.asarray(Image.open(path).convert("RGB"))
    boxes, height, width = grid_layout(weight.shape[0], groups, weight.shape[-1], scale)
    assert image.shape == (height, width, 3)
    expected = kernel_tiles(weight)
    covered = np.zeros(image.shape[:2], bool)
    for box in boxes:
        tile = image[box.top : box.top + box.size, box.left : box.left + box.size]
        assert np.array_equal(tile[::scale, ::scale], expected[box.index]), f"tile {box.index}"
        covered[box.top : box.top + box.size, box.left : box.left + box.size] = True
    # Everything outside the tiles is the background: the tiles neither overlap nor are hidden.
    assert (image[~covered] == BACKGROUND).all()
    assert covered.sum() == len(boxes) * boxes[0].size ** 2
    return boxes, image


def test_default_alexnet_draws_96_tiles_in_two_blocks(tmp_path):
    torch.manual_seed(0)
    model = AlexNet(num_classes=10)
    path = save_filters_png(model, tmp_path / "filters.png")
    weight = model.conv1.weight.detach().numpy()
    boxes, image = _tiles_in_png(path, weight, groups=2)
    assert len(boxes) == 96
    # The two groups (the paper's two GPUs) are blocks apart: 48 above, 48 below a wider gap.
    tops = sorted({b.top for b in boxes})
    gaps = np.diff(tops)
    assert len(tops) == 6 and gaps.max() > gaps.min()
    assert max(b.top for b in boxes[:48]) < min(b.top for b in boxes[48:])


def test_each_kernel_is_scaled_to_its_own_range():
    weight = np.random.default_rng(0).normal(size=(4, 3, 11, 11))
    weight[1] *= 100  # a large kernel must not wash out the small ones
    weight[2] = 0.5  # a constant kernel has no range
    tiles = kernel_tiles(weight)
    for k in (0, 1, 3):
        assert tiles[k].min() == 0 and tiles[k].max() == 255
    assert (tiles[2] == 128).all()


def test_width_multiplier_and_one_column(tmp_path):
    model = AlexNet(num_classes=10, width=0.25, groups=1)
    assert model_groups(model) == 1
    path = save_filters_png(model, tmp_path / "f.png")
    boxes, _ = _tiles_in_png(path, model.conv1.weight.detach().numpy(), groups=1)
    assert len(boxes) == model.conv1.out_channels == 24
    image, boxes2 = filter_grid(AlexNet(num_classes=10, width=0.25).conv1.weight.detach().numpy(), groups=2)
    assert len(boxes2) == 24 and len({b.top for b in boxes2}) == 2  # 12 per block, one row each


def test_cli_draws_a_checkpoint(tmp_path, capsys):
    from tests.evaluate.helpers import write_checkpoint
    from trainer.cli import main as trainer_main

    model = AlexNet(num_classes=3, width=0.25)
    path = write_checkpoint(tmp_path / "last.pt", model, {"num_classes": 3, "width": 0.25, "groups": 2})
    out = tmp_path / "fig3.png"
    assert trainer_main(["filters", "--checkpoint", str(path), "-o", str(out), "--scale", "2"]) == 0
    assert "24 conv1 kernels in 2 block(s)" in capsys.readouterr().out
    _tiles_in_png(out, model.conv1.weight.detach().numpy(), groups=2, scale=2)
