"""The paper's Figure 1: a four-layer CNN trained with ReLU and with tanh units.

    trainer experiment relu-vs-tanh --data shards/ [-o relu-vs-tanh.png] [--lrs 0.01,0.03,0.1]

The paper measured on CIFAR-10 how many epochs each net needs to reach 25% training error.
Here the train split of the shards is decoded once, shrunk to CIFAR's 32x32, and held in
memory; the net is cuda-convnet's CIFAR-10 example as section 3.1 describes it (three 5x5
convolutions of 32, 32 and 64 kernels with 3/2 pooling, then one fully-connected softmax
layer: four layers with weights). As in the paper, no regularization of any kind (no
weight decay, dropout or augmentation), and each nonlinearity gets its own learning rate:
every rate in `--lrs` is tried and the fastest kept. Both nets start from the same weights.
Training error is the fraction of training images misclassified during the epoch.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import argtypes

TARGET_ERROR = 0.25
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def four_layer_cnn(activation: str, num_classes: int, image_size: int = 32) -> nn.Sequential:
    """Three convolutional layers and one fully-connected layer, cuda-convnet's CIFAR-10 net."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    channels, side = 3, image_size
    for i, out in enumerate((32, 32, 64)):
        # First pool max, the others average, as in cuda-convnet's layers-80sec.cfg.
        pool = nn.MaxPool2d(3, 2, ceil_mode=True) if i == 0 else nn.AvgPool2d(3, 2, ceil_mode=True)
        layers += [nn.Conv2d(channels, out, 5, padding=2), act(), pool]
        channels, side = out, math.ceil((side - 3) / 2) + 1
    layers += [nn.Flatten(), nn.Linear(channels * side * side, num_classes)]
    return nn.Sequential(*layers)


def shrunk_split(data_dir: str | Path, split: str, size: int, limit: int | None,
                 manifest=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a split as (N, 3, size, size) uint8 and (N,) labels, in shard order
    (`pipeline.inorder`: a damaged sample is reported and left out, as in training);
    `manifest`: dataset.json as the command read it."""
    from pipeline.inorder import SplitSamples

    images, labels = [], []
    for sample in SplitSamples(data_dir, split, manifest).read(decode=functools.partial(_shrink, size=size)):
        images.append(sample.image)
        labels.append(sample.label)
        if limit and len(images) >= limit:
            break
    return _stack(images, labels)


def _shrink(data: bytes, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (2 * size, 2 * size))  # JPEG DCT scaling: decode small
        return np.asarray(im.convert("RGB").resize((size, size), Image.BOX))


def _stack(images: list, labels: list) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def train_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, max_epochs: int,
                batch_size: int, seed: int, target: float = TARGET_ERROR) -> list[float]:
    """Training error per epoch until it reaches `target` or `max_epochs` pass."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    model.train()
    for _ in range(max_epochs):
        wrong = 0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            wrong += int((logits.argmax(1) != y[idx]).sum())
        curve.append(wrong / len(x))
        if curve[-1] <= target or not math.isfinite(loss.item()):
            break
    return curve


def epochs_to(curve: list[float], target: float = TARGET_ERROR) -> int | None:
    """1-based epoch at which training error first reached `target`, or None."""
    return next((i + 1 for i, e in enumerate(curve) if e <= target), None)


def relu_vs_tanh(x: torch.Tensor, y: torch.Tensor, num_classes: int, lrs: list[float], max_epochs: int,
                 batch_size: int, seed: int) -> dict:
    """For each nonlinearity, the curve of the fastest learning rate in `lrs`."""
    mean = x.float().mean(dim=(0, 2, 3), keepdim=True)
    std = x.float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1.0)
    xn = (x.float() - mean) / std
    results = {}
    for activation in ACTIVATIONS:
        best = None
        for lr in lrs:
            torch.manual_seed(seed)  # the same initial weights for every net
            model = four_layer_cnn(activation, num_classes, x.shape[-1])
            start = time.perf_counter()
            curve = train_curve(model, xn, y, lr, max_epochs, batch_size, seed)
            run = {"lr": lr, "curve": curve, "epochs_to_target": epochs_to(curve),
                   "seconds": round(time.perf_counter() - start, 2)}
            if best is None or _faster(run, best):
                best = run
        results[activation] = best
    return results


def _faster(a: dict, b: dict) -> bool:
    ea, eb = a["epochs_to_target"], b["epochs_to_target"]
    if ea is not None or eb is not None:
        return eb is None or (ea is not None and ea < eb)
    return min(a["curve"]) < min(b["curve"])  # neither reached it: the lower error wins


def plot(results: dict, path: str | Path, target: float = TARGET_ERROR) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for activation, style in (("relu", "-"), ("tanh", "--")):
        r = results[activation]
        epochs = range(1, len(r["curve"]) + 1)
        ax.plot(epochs, r["curve"], style, color="black", label=f"{activation} (lr {r['lr']:g})")
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("Epochs")
    ax.set_ylabel("Training error rate")
    ax.set_ylim(0, max(0.8, max(max(r["curve"]) for r in results.values()) + 0.05))
    ax.legend()
    ax.set_title(f"Four-layer CNN: epochs to {target:.0%} training error")
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=("relu-vs-tanh",), help="which experiment")
    parser.add_argument("--data", required=True, help="shard folder (its train split is used)")
    parser.add_argument("-o", "--output", default="relu-vs-tanh.png", help="plot PNG to write")
    parser.add_argument("--json", default=None, help="curves as JSON (default: the PNG's name, .json)")
    parser.add_argument("--lrs", type=argtypes.NumberList(argtypes.learning_rate), default="0.003,0.01,0.03",
                        help="learning rates to try per nonlinearity; the fastest is kept")
    parser.add_argument("--max-epochs", type=argtypes.positive_int, default=100)
    parser.add_argument("--batch-size", type=argtypes.positive_int, default=128)
    parser.add_argument("--image-size", type=argtypes.count(8, 256), default=32,
                        help="side images are shrunk to (CIFAR: 32)")
    parser.add_argument("--max-images", type=argtypes.positive_int, default=None,
                        help="use only the first N training images")
    parser.add_argument("--seed", type=argtypes.seed, default=0)


def run(args: argparse.Namespace) -> int:
    from common import exitcodes
    from preprocess.contract import DataError, Manifest

    lrs = args.lrs  # checked by its type: numbers in the learning rate's range
    try:
        manifest = Manifest.read(args.data)  # the command's one read, passed down
        num_classes = manifest.num_classes
        x, y = shrunk_split(args.data, "train", args.image_size, args.max_images, manifest)
    except DataError as exc:
        print(f"trainer experiment: {exc}")
        return exitcodes.for_error(exc)
    print(f"relu-vs-tanh: {len(x)} training images at {args.image_size}x{args.image_size}, "
          f"{num_classes} classes, learning rates {lrs}")
    results = relu_vs_tanh(x, y, num_classes, lrs, args.max_epochs, args.batch_size, args.seed)
    for activation, r in results.items():
        reached = r["epochs_to_target"]
        when = f"{reached} epochs" if reached else f"not within {len(r['curve'])} epochs"
        print(f"  {activation}: {TARGET_ERROR:.0%} training error after {when} (lr {r['lr']:g})")
    relu, tanh = results["relu"]["epochs_to_target"], results["tanh"]["epochs_to_target"]
    summary = {"experiment": "relu-vs-tanh", "target_error": TARGET_ERROR, "images": len(x),
               "image_size": args.image_size, "results": results,
               "tanh_over_relu_epochs": (tanh / relu) if relu and tanh else None}
    if summary["tanh_over_relu_epochs"]:
        print(f"  tanh needs {summary['tanh_over_relu_epochs']:.1f}x the epochs of ReLU (the paper: about 6x)")
    plot(results, args.output)
    json_path = Path(args.json or Path(args.output).with_suffix(".json"))
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.output} and {json_path}")
    return 0
