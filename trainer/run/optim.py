"""The paper's SGD (section 5), and `torch.optim.SGD` as the alternative (`--optimizer torch`).

    v <- 0.9 * v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

The velocity carries the learning rate eps. After an LR change the velocity still holds
steps taken with the old eps and decays at the momentum rate, whereas torch's SGD keeps
v <- m*v + g + wd*w and multiplies the whole velocity by the new LR at once. The two
coincide while the LR is constant.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 5e-4
PAPER_LR = 0.01


class PaperSGD(Optimizer):
    def __init__(self, params, lr: float = PAPER_LR, momentum: float = PAPER_MOMENTUM,
                 weight_decay: float = PAPER_WEIGHT_DECAY):
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"bad hyper-parameters: lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            velocity = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocity.append(state["velocity"])
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            # The paper's terms in the paper's order; foreach keeps it to a few kernels.
            torch._foreach_mul_(velocity, m)
            if wd:
                torch._foreach_add_(velocity, params, alpha=-wd * lr)
            torch._foreach_add_(velocity, grads, alpha=-lr)
            torch._foreach_add_(params, velocity)
        return loss


def create_optimizer(name: str, params, *, lr: float, momentum: float, weight_decay: float) -> Optimizer:
    if name == "paper":
        return PaperSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "torch":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected paper or torch")


def get_lr(optimizer: Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
