"""evaluate_loader is exact: padding masked, the same errors whatever the batch size and
however many ranks share the split (counts summed)."""

from __future__ import annotations

import torch

from pipeline import make_loader
from trainer.model import AlexNet
from trainer.validation import evaluate_loader


def _loader(data, mode, batch, rank=0, world=1):
    return make_loader(data, split="val", mode=mode, batch_size=batch, backend="reference", rank=rank,
                       world_size=world, num_workers=1)


def test_center_and_tencrop_errors_are_exact_over_ranks_and_batch_sizes(demo_shards):
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, width=0.0625)
    model.fc3.bias.data = torch.linspace(-1, 1, 10)  # not all ties: top-1 picks a class
    whole = evaluate_loader(model, _loader(demo_shards, "center", 40), "cpu")
    assert whole["count"] == 40
    # 40 images in batches of 3 over two ranks: padded last batches, summed by hand here.
    parts = [evaluate_loader(model, _loader(demo_shards, "center", 3, r, 2), "cpu") for r in (0, 1)]
    assert sum(p["count"] for p in parts) == 40
    top1 = sum(p["top1_error"] * p["count"] for p in parts) / 40
    assert abs(top1 - whole["top1_error"]) < 1e-9
    ten = evaluate_loader(model, _loader(demo_shards, "tencrop", 4), "cpu", max_batches=1)
    assert ten["count"] == 4 and 0 <= ten["top5_error"] <= ten["top1_error"] <= 1
    assert model.training  # the mode is restored
