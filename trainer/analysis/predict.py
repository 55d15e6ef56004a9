"""The left half of the paper's Figure 4: the five most probable classes of each image.

    trainer predict --checkpoint runs/NAME/checkpoints/last.pt [--data shards/] photo.jpg ...

Any JPEG or PNG is prepared as training data is (shorter side 256, center 256x256, center
224x224 patch, mean subtracted); the class names come from the shards' `dataset.json`.
An image that cannot be decoded gets one line saying so, and the others are still ranked.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import argtypes

TOP = 5


@torch.no_grad()
def top_classes(model: torch.nn.Module, inputs: torch.Tensor, k: int = TOP) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 224, 224) -> probabilities and class indices of the k most probable, (N, k) each."""
    probs = model(inputs).float().softmax(dim=1)
    return probs.topk(min(k, probs.shape[1]), dim=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `trainer train`")
    parser.add_argument("--data", help="shard folder for class names and the mean image "
                        "(default: the one in the checkpoint's config)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead")
    parser.add_argument("--device", type=argtypes.device, default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")


def run(args: argparse.Namespace) -> int:
    from common import exitcodes
    from preprocess.contract import DataError, load_stats
    from trainer.run.distributed import setup
    from trainer.analysis.inference import CheckpointError, image_input, load_models

    device = setup(args.device).device
    try:
        (model,), (config,), data_dir, manifest = load_models([args.checkpoint], args.data, device)
        load_stats(data_dir, manifest.image_size)  # a damaged stats.npz ends the command once, not each image with it
    except (CheckpointError, DataError) as exc:
        print(f"trainer predict: {exc}")
        return exitcodes.for_error(exc)
    names = manifest.class_names()
    inputs, kept, failed = [], [], 0
    for path in args.images:
        try:
            x, _ = image_input(path, data_dir, config, manifest)
        except DataError as exc:
            print(f"trainer predict: {exc}")
            failed += 1
            continue
        inputs.append(x)
        kept.append(path)
    for start in range(0, len(kept), 64):
        batch = torch.stack(inputs[start : start + 64]).to(device)
        probs, classes = top_classes(model, batch)
        for path, p, c in zip(kept[start : start + 64], probs.tolist(), classes.tolist()):
            ranked = [{"class": names[i], "index": i, "probability": q} for q, i in zip(p, c)]
            if args.json:
                print(json.dumps({"image": path, "top5": ranked}))
                continue
            print(path)
            for r in ranked:
                print(f"  {100 * r['probability']:6.2f}%  {r['class']}")
    return 1 if failed else 0
