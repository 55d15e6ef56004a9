"""One SGD step of the paper's objective: the step `trainer train` takes, and the one the
benchmarks time (`benchmarks/train_bench.py`'s bare loop, `benchmarks/gpu/train.py`).

The batch goes to the device (a no-op for a batch already there), channels-last when the
run is, the forward pass under bf16 autocast when AMP is on, the loss in fp32, then the
optimizer's step. One path for CPU and GPU, AMP on or off (STYLE.md: `enabled=` flags).
`LossTally` is how the loop reads those losses back: summed on the device, averaged over
ranks when the loop asks (a log interval, a checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.base import DAMAGED
from trainer.run.distributed import all_reduce_sum


@dataclass(frozen=True)
class TrainStep:
    """`step(images, labels)`: one optimizer step on a batch; returns its loss."""

    net: torch.nn.Module  # the model as trained: DDP-wrapped and/or compiled, or bare
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: bool
    channels_last: bool

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's loss, still on the device (reading it back would wait for the GPU)."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).long()
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(images)
        loss = batch_loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss


def batch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's objective: the mean over the batch's real rows of -log p(label), in fp32.

    A damaged row keeps its place with the label DAMAGED (`pipeline.base.BaseLoader.finish`
    decides which rows are real), so the batch has one shape all run; it adds nothing to the
    sum nor to the count. A batch of damaged rows only gives 0 and still takes part in DDP's
    reduction. DDP averages the gradients over ranks: the mean over the whole SGD batch.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=DAMAGED, reduction="sum")
    return total / (labels != DAMAGED).sum().clamp(min=1)


class LossTally:
    """The steps' losses summed on the device and read back only when asked, so that on a
    GPU the host keeps queueing work instead of waiting for each step's loss."""

    def __init__(self, device: torch.device):
        self.sum = torch.zeros((), device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss.detach()
        self.count += 1

    def take(self, world, model: torch.nn.Module | None = None) -> tuple[float, bool]:
        """(the mean loss over every rank's steps since the last take, whether there were
        any), and the tally restarts. Every rank calls it (an all-reduce). With `model`, the
        mean is not finite either when any rank's weights are not."""
        total = torch.tensor([self.sum.item(), float(max(self.count, 1))], dtype=torch.float64)
        if model is not None:
            weights = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum()
            total[0] += 0.0 if torch.isfinite(weights) else float("nan")
        total[0] = total[0] if torch.isfinite(total[0]) else float("inf")
        all_reduce_sum(world, total)
        had_steps = self.count > 0
        self.sum.zero_()
        self.count = 0
        return float(total[0] / total[1]), had_steps
