"""The one evaluation core: exact top-1/top-5 error of models over a split, per view.

Used by `trainer train` (`evaluate_loader`: center crop after each epoch, the ten patches at
the end) and by `trainer evaluate` (`tally`: every checkpoint and the ensembles, both views),
so the page's validation error and `trainer evaluate` of the same checkpoint are the same
computation: the same forward, the same counts, the same division.

Views: a center batch (B, 3, H, W) gives "center"; a ten-crop batch (B, 10, 3, H, W) gives
"tencrop" (softmax averaged over the four corner and center patches and their reflections,
section 4.1) and "center" (its center patch alone). An ensemble averages its members'
softmax outputs, per view.

Exact under DDP: every rank counts the errors of its own share, the loader pads the last
batch to a common shape and `valid` masks the padding out, and the counts (not rates) are
summed over ranks, so every image of the split counts once.

Precision, the one rule (`run_precision`): the forward runs as the trainer trains that
run's net on this device (bf16 autocast where `--amp` gives bf16, channels-last where
`--channels-last` gives it), because the error of a checkpoint is the error of the net as it
runs, and the run's page already shows that number; the softmax, the averages over patches
and models and the top-k run in float32, because bf16 keeps 8 bits of mantissa: among a
thousand probabilities near 1e-3 many would tie, and the top-5 would be decided by rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.augment import CENTER_OFFSET, TEN_CROPS

VIEWS = ("tencrop", "center")
METRICS = ("top1_error", "top5_error")
CENTER_PATCH = TEN_CROPS.index((CENTER_OFFSET, CENTER_OFFSET, False))  # the center view among the ten


@dataclass(frozen=True)
class Precision:
    bf16: bool = False  # the forward under bf16 autocast
    channels_last: bool = False  # the input in channels-last layout, as the net's weights


def run_precision(amp: str, channels_last: str, device: torch.device | str) -> Precision:
    """The rule for a run's `--amp` and `--channels-last` ("auto" means: on a GPU)."""
    on_gpu = torch.device(device).type == "cuda"
    return Precision(bf16=amp == "bf16" or (amp == "auto" and on_gpu),
                     channels_last=channels_last == "on" or (channels_last == "auto" and on_gpu))


def config_precision(config: dict, device: torch.device | str) -> Precision:
    """`run_precision` of a checkpoint's config (older ones lack the keys: their default)."""
    return run_precision(config.get("amp", "auto"), config.get("channels_last", "auto"), device)


def view_probs(model: torch.nn.Module, images: torch.Tensor, precision: Precision = Precision()
               ) -> dict[str, torch.Tensor]:
    """float32 softmax outputs (B, C) per view of a center or ten-crop batch."""
    crops = images.dim() == 5
    x = images.flatten(0, 1) if crops else images
    if precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision.bf16):
        logits = model(x)
    probs = logits.float().softmax(dim=1)
    if not crops:
        return {"center": probs}
    probs = probs.view(images.shape[0], images.shape[1], -1)
    return {"tencrop": probs.mean(dim=1), "center": probs[:, CENTER_PATCH]}


def count_errors(probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C) probabilities -> [top-1 errors, top-5 errors] over the valid rows (float64)."""
    k = min(5, probs.shape[1])
    hit = probs.topk(k, dim=1).indices == labels[:, None]
    wrong1 = ~hit[:, 0] & valid
    wrong5 = ~hit.any(dim=1) & valid
    return torch.stack([wrong1.sum(), wrong5.sum()]).to(torch.float64)


@torch.no_grad()
def tally(models: list[torch.nn.Module], batches, device: torch.device | str, *, views: tuple[str, ...] = VIEWS,
          precisions: list[Precision] | None = None, ensembles: list[list[int]] | None = None,
          group=None) -> tuple[torch.Tensor, int]:
    """Error counts of shape (len(models) + len(ensembles), len(views), len(METRICS)) over every
    valid sample of `batches` on all ranks, and that number of samples.

    One row per model, then one per ensemble (default: none for one model, else one of every
    model). `batches` yields (images, labels, valid); `views` names what its images give
    (("center",) for center batches). Under torch.distributed the counts are summed over
    `group` (default: the default group). Models are put in eval mode and given back in theirs.
    """
    device = torch.device(device)
    precisions = precisions or [Precision()] * len(models)
    if ensembles is None:
        ensembles = [list(range(len(models)))] if len(models) > 1 else []
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    counts = torch.zeros(len(models) + len(ensembles), len(views), len(METRICS), dtype=torch.float64,
                         device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for images, labels, valid in batches:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True).long()  # no-ops for the loader's
            valid = valid.to(device, non_blocking=True).bool()     # tensors, already there
            probs = [view_probs(m, images, p) for m, p in zip(models, precisions)]
            for e, members in enumerate([[i] for i in range(len(models))] + ensembles):
                for j, view in enumerate(views):
                    mean = sum(probs[i][view] for i in members) / len(members)  # x / 1 == x exactly
                    counts[e, j] += count_errors(mean, labels, valid)
            seen += valid.sum()
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    both = _sum_over_ranks(torch.cat([counts.flatten(), seen.view(1)]), group)
    return both[:-1].view(counts.shape), int(both[-1].item())


def _sum_over_ranks(values: torch.Tensor, group) -> torch.Tensor:
    """Summed over the ranks of `group` (gloo sums on the CPU, nccl on the GPU), on the CPU."""
    if dist.is_available() and dist.is_initialized():
        values = values.cpu() if dist.get_backend(group) == "gloo" else values
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
    return values.cpu()


def rates(errors: torch.Tensor, seen: int, views: tuple[str, ...] = VIEWS) -> dict[str, dict[str, float]]:
    """One row of `tally` as {view: {metric: error rate}}: errors / images (NaN for none)."""
    return {view: {metric: float(errors[j, k]) / seen if seen else float("nan") for k, metric in enumerate(METRICS)}
            for j, view in enumerate(views)}


def evaluate_loader(model: torch.nn.Module, loader, device: torch.device | str, *, view: str, group=None,
                    precision: Precision = Precision()) -> dict:
    """{top1_error, top5_error, count} of `model` in `view` ("center" for a center loader,
    "tencrop" for a ten-crop one) over every valid sample of `loader`, on all ranks."""
    views = (view,) if view == "center" else VIEWS
    counts, seen = tally([model], loader, device, views=views, precisions=[precision], group=group)
    return {**rates(counts[0], seen, views)[view], "count": seen}
