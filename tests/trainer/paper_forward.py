"""Section 3 of the paper written out once more, in plain torch.nn.functional calls on a
state dict: the reference that `trainer.run.model.AlexNet` must compute, switch by switch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

K, N, ALPHA, BETA = 2.0, 5, 1e-4, 0.75  # section 3.3


def lrn(a: torch.Tensor) -> torch.Tensor:
    """b_i = a_i / (k + alpha * sum_{j = i-n/2}^{i+n/2} a_j^2)^beta over the channels that exist."""
    sq = F.pad(a.pow(2), (0, 0, 0, 0, N // 2, N // 2))  # zero channels beyond both ends
    window = sum(sq[:, j : j + a.shape[1]] for j in range(N))
    return a / (K + ALPHA * window).pow(BETA)


def paper_forward(sd: dict, x: torch.Tensor, *, groups: int = 2, lrn_on: bool = True, overlap_pool: bool = True,
                  activation: str = "relu") -> torch.Tensor:
    """Logits of the network in eval mode (dropout off)."""
    act = torch.relu if activation == "relu" else torch.tanh
    norm = lrn if lrn_on else (lambda t: t)

    def pool(t):
        return F.max_pool2d(t, 3, 2) if overlap_pool else F.max_pool2d(t, 2, 2)

    def conv(t, name, **kw):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)

    def fc(t, name):
        return F.linear(t, sd[f"{name}.weight"], sd[f"{name}.bias"])

    x = pool(norm(act(conv(x, "conv1", stride=4, padding=2))))
    x = pool(norm(act(conv(x, "conv2", padding=2, groups=groups))))  # the two columns
    x = act(conv(x, "conv3", padding=1))  # connected across the columns
    x = act(conv(x, "conv4", padding=1, groups=groups))
    x = pool(act(conv(x, "conv5", padding=1, groups=groups))).flatten(1)
    x = act(fc(x, "fc1"))
    x = act(fc(x, "fc2"))
    return fc(x, "fc3")
