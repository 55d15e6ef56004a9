"""The paper's SGD (section 5), and `torch.optim.SGD` as the alternative (`--optimizer torch`).

    v <- 0.9 * v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

The velocity carries the learning rate eps. After an LR change the velocity still holds
steps taken with the old eps and decays at the momentum rate, whereas torch's SGD keeps
v <- m*v + g + wd*w and multiplies the whole velocity by the new LR at once. The two
coincide while the LR is constant.

`PaperSGD(fused=True)` takes the same step as one compiled pass over each parameter
(read w, g, v once, write w, v once) instead of four `_foreach` passes: what `trainer train`
uses wherever it compiles the model (`trainer.run.compiled`). Its learning rate reaches
the compiled code as a 0-d tensor, never as a Python number, so an LR division changes
a value in memory and not the code: no recompilation, and the velocity is left as it is
(section 5's rule above, not a rescale).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 5e-4
PAPER_LR = 0.01


def paper_update(params: list[torch.Tensor], grads: list[torch.Tensor], velocity: list[torch.Tensor],
                 lr, momentum: float, weight_decay: float) -> None:
    """Section 5's rule, in place, the paper's terms in the paper's order. `lr` is a float
    (eager: a few `_foreach` kernels), or (compiled) a tensor on the parameters' device
    holding [-weight_decay * lr, -lr], each product rounded once on the host as eager's
    `alpha` is, so both forms take the same step to the last bit or two."""
    torch._foreach_mul_(velocity, momentum)
    if isinstance(lr, torch.Tensor):  # `alpha=` takes numbers only; compiled, the products fuse
        if weight_decay:
            torch._foreach_add_(velocity, torch._foreach_mul(params, lr[0]))
        torch._foreach_add_(velocity, torch._foreach_mul(grads, lr[1]))
    else:
        if weight_decay:
            torch._foreach_add_(velocity, params, alpha=-weight_decay * lr)
        torch._foreach_add_(velocity, grads, alpha=-lr)
    torch._foreach_add_(params, velocity)


_fused_update = None


def fused_update():
    """`paper_update` compiled once a process: inductor fuses the four passes into one."""
    global _fused_update
    if _fused_update is None:
        _fused_update = torch.compile(paper_update, fullgraph=True, dynamic=False)
    return _fused_update


class PaperSGD(Optimizer):
    def __init__(self, params, lr: float = PAPER_LR, momentum: float = PAPER_MOMENTUM,
                 weight_decay: float = PAPER_WEIGHT_DECAY, *, fused: bool = False):
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"bad hyper-parameters: lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.fused = fused
        self._lr_tensors: dict[int, tuple[float, torch.Tensor]] = {}  # group -> (its lr, its coefficients)

    def _lr_tensor(self, i: int, group: dict, like: torch.Tensor) -> torch.Tensor:
        # Written in place when the LR changes: the compiled code reads it, never guards on it.
        lr = group["lr"]
        coefficients = [-group["weight_decay"] * lr, -lr]
        held = self._lr_tensors.get(i)
        if held is None or held[1].device != like.device or held[1].dtype != like.dtype:
            held = (lr, torch.tensor(coefficients, dtype=like.dtype, device=like.device))
        elif held[0] != lr:
            held[1].copy_(torch.tensor(coefficients, dtype=like.dtype), non_blocking=True)
            held = (lr, held[1])
        self._lr_tensors[i] = held
        return held[1]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, group in enumerate(self.param_groups):
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
            if self.fused:
                fused_update()(params, grads, velocity, self._lr_tensor(i, group, params[0]), m, wd)
            else:
                paper_update(params, grads, velocity, lr, m, wd)
        return loss


def create_optimizer(name: str, params, *, lr: float, momentum: float, weight_decay: float,
                     fused: bool = False) -> Optimizer:
    """`fused`: PaperSGD's compiled update; torch's SGD takes its own (`foreach`) path."""
    if name == "paper":
        return PaperSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if name == "torch":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected paper or torch")


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
