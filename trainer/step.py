"""One SGD step of the paper's objective: the step `trainer train` takes, and the one the
benchmarks time (`benchmarks/train_bench.py`'s bare loop, `benchmarks/gpu/train.py`).

The batch goes to the device (a no-op for a batch already there), channels-last when the
run is, the forward pass under bf16 autocast when AMP is on, the loss in fp32, then the
optimizer's step. One path for CPU and GPU, AMP on or off (STYLE.md: `enabled=` flags).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def step_settings(cfg, device: torch.device) -> tuple[bool, bool]:
    """(amp, channels_last) of a run on `device`: `auto` turns each on for a GPU."""
    on_gpu = device.type == "cuda"
    return (cfg.amp == "bf16" or (cfg.amp == "auto" and on_gpu),
            cfg.channels_last == "on" or (cfg.channels_last == "auto" and on_gpu))


@dataclass(frozen=True)
class TrainStep:
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
        # The paper's objective: the mean over the batch of -log p(label); DDP averages
        # the gradients over ranks, so this is the mean over the whole SGD batch.
        # A batch whose JPEGs were all damaged is empty; it still takes part in DDP's reduction.
        loss = F.cross_entropy(logits.float(), labels) if len(labels) else logits.sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss
