"""Exact top-1/top-5 error over a validation loader: center crop, or the paper's ten patches.

Used by `trainer train` after each epoch (center) and at the end (ten-crop), and by
`trainer evaluate`. Ten-crop averages the softmax outputs of the four corner and center
patches and their reflections (section 4.1). Under DDP every rank counts its own share
and the counts are summed, so the error is over the whole split exactly once: the loader
pads the last batch to a common shape and `valid` masks the padding out.
"""

from __future__ import annotations

import torch

from trainer.distributed import World, all_reduce_sum


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, *, amp: bool = False,
                  channels_last: bool = False) -> torch.Tensor:
    """Softmax outputs (B, C); a (B, 10, 3, H, W) batch is averaged over its ten patches."""
    crops = images.dim() == 5
    x = images.flatten(0, 1) if crops else images
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    probs = torch.softmax(logits.float(), dim=1)
    return probs.view(images.shape[0], images.shape[1], -1).mean(1) if crops else probs


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader, device: torch.device | str, *, world: World | None = None,
                    amp: bool = False, channels_last: bool = False, max_batches: int = 0) -> dict:
    """{top1_error, top5_error, count} of `model` on every valid sample of `loader`.

    The loader yields (images, labels, valid); images are (B,3,224,224) or (B,10,3,224,224).
    The model is put in eval mode and returned to its previous mode afterwards."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # top1 hits, top5 hits, samples
    try:
        for i, (images, labels, valid) in enumerate(loader):
            if max_batches and i >= max_batches:
                break
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True).long()
            valid = valid.to(device, non_blocking=True).bool()
            probs = predict_probs(model, images, amp=amp, channels_last=channels_last)
            k = min(5, probs.shape[1])
            top = probs.topk(k, dim=1).indices
            hit = top == labels[:, None]
            counts[0] += (hit[:, 0] & valid).sum()
            counts[1] += (hit.any(1) & valid).sum()
            counts[2] += valid.sum()
    finally:
        model.train(was_training)
    counts = counts.cpu()
    if world is not None:
        all_reduce_sum(world, counts)
    n = int(counts[2].item())
    if n == 0:
        return {"top1_error": float("nan"), "top5_error": float("nan"), "count": 0}
    return {"top1_error": 1.0 - counts[0].item() / n, "top5_error": 1.0 - counts[1].item() / n, "count": n}
