"""AlexNet as in Krizhevsky, Sutskever and Hinton (2012), section 3, with docs/design.md's decisions.

Used by `trainer train` (and `trainer evaluate`, `filters`, `neighbors`). With default
arguments: 60,965,224 parameters; layer outputs 290,400-186,624-64,896-64,896-43,264-
4096-4096-1000 at 224x224 (conv1 padding 2, so that 224 divides as the paper's counts
from conv2 on require). The switches exist for the paper's comparisons: one or two
columns (`groups`), LRN, overlapping pooling, dropout rate, ReLU or tanh, the sixth conv
layer of section 6's pre-trained nets (`extra_conv`), the initialisation (`init`), and a
width multiplier plus `num_classes` for small runs.

The sixth conv layer. Section 6 says only "an extra sixth convolutional layer over the last
pooling layer". We take conv5's shape (3x3, 256 kernels, padding 1, within each column,
bias 1 as conv5) applied to pool5's 6x6x256 output and followed by a ReLU: the shape keeps
6x6x256, so the classifier is the plain net's and fine-tuning (`--init-from`) between the two
copies every FC layer. A second pooling would leave 2x2, a classifier the paper never shows.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from trainer.run.lrn import LocalResponseNorm

INIT_STD = 0.01  # section 5: weights ~ N(0, 0.01)
INITS = ("paper", "kaiming")


def _channels(base: int, width: float) -> int:
    """Scaled layer width, kept even so that both groups=1 and groups=2 divide it."""
    return max(2, int(round(base * width / 2)) * 2)


class AlexNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        groups: int = 2,
        lrn: bool = True,
        overlap_pool: bool = True,
        dropout: float = 0.5,
        activation: str = "relu",
        bias_const: float = 1.0,
        extra_conv: bool = False,
        init: str = "paper",
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, not {init!r}")
        if groups not in (1, 2):
            raise ValueError(f"groups must be 1 (one column) or 2 (the paper's two GPUs), not {groups}")
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, not {activation!r}")
        c1, c2, c3, c4, c5 = (_channels(c, width) for c in (96, 256, 384, 384, 256))
        hidden = _channels(4096, width)
        self.bias_const = bias_const
        self.init = init
        act = nn.ReLU if activation == "relu" else nn.Tanh
        norm = LocalResponseNorm if lrn else nn.Identity  # section 3.3's constants
        # 3/2 overlapping pooling, or the traditional 2/2 it is compared against (same output size here).
        pool = (lambda: nn.MaxPool2d(3, 2)) if overlap_pool else (lambda: nn.MaxPool2d(2, 2))

        self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, groups=groups)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)  # connected to both columns
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1, groups=groups)
        self.conv5 = nn.Conv2d(c4, c5, 3, padding=1, groups=groups)
        self.conv6 = nn.Conv2d(c5, c5, 3, padding=1, groups=groups) if extra_conv else None
        self.fc1 = nn.Linear(c5 * 6 * 6, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.act = act()
        self.norm1, self.norm2 = norm(), norm()
        self.pool = pool()
        # Dropout on the *outputs* of the two hidden layers (section 4.2), not their inputs.
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def learned_layers(self) -> list[tuple[str, nn.Module]]:
        names = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2", "fc3")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    def reset_parameters(self) -> None:
        """`paper` (section 5): weights N(0, 0.01); biases `bias_const` in conv2, conv4, conv5
        (conv6) and the hidden FC layers, 0 elsewhere (Caffe's reproduction needed 0.1:
        `--bias-const`). `kaiming`: torchvision's AlexNet, which keeps PyTorch's layer defaults
        (Kaiming-uniform with a = sqrt(5), uniform biases); it leaves chance far sooner on
        small corpora (benchmarks/ablations.py counts the steps)."""
        for name, layer in self.learned_layers():
            if self.init == "kaiming":
                layer.reset_parameters()
                continue
            nn.init.normal_(layer.weight, 0.0, INIT_STD)
            one = name in ("conv2", "conv4", "conv5", "conv6", "fc1", "fc2")
            nn.init.constant_(layer.bias, self.bias_const if one else 0.0)

    def _layers(self, x: torch.Tensor):
        """Yields each learned layer's output in order; the forward pass and the layer-size
        check share this one definition of the network."""
        x = self.conv1(x); yield x
        x = self.pool(self.norm1(self.act(x)))
        x = self.conv2(x); yield x
        x = self.pool(self.norm2(self.act(x)))
        x = self.conv3(x); yield x
        x = self.conv4(self.act(x)); yield x
        x = self.conv5(self.act(x)); yield x
        x = self.pool(self.act(x))
        if self.conv6 is not None:
            x = self.conv6(x); yield x
            x = self.act(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x); yield x
        x = self.fc2(self.dropout(self.act(x))); yield x
        yield self.act(x)  # the last hidden layer, before its dropout

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last 4096-d hidden layer (after FC2's ReLU, before dropout): the feature
        space of the paper's nearest-neighbour figure."""
        for x in self._layers(x):
            pass
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.dropout(self.hidden(x)))

    def layer_outputs(self, x: torch.Tensor) -> list[int]:
        """Neurons per learned layer (the numbers of the paper's Figure 2 caption)."""
        outs = list(self._layers(x))
        return [o[0].numel() for o in outs[:-1]] + [self.fc3(outs[-1])[0].numel()]


def configure_cuda() -> None:
    """Backend settings for training and evaluating this model on CUDA. cudnn.benchmark:
    a run's shapes are fixed (train batches; eval batches are padded to full size), so
    cuDNN's autotuning is paid once per shape."""
    torch.backends.cudnn.benchmark = True


MODEL_FIELDS = ("num_classes", "width", "groups", "lrn", "overlap_pool", "dropout", "activation", "bias_const",
                "extra_conv", "init")


def build_model(config) -> AlexNet:
    """AlexNet from a config dataclass or dict; only the model's fields are read."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return AlexNet(**{k: cfg[k] for k in MODEL_FIELDS if k in cfg and cfg[k] is not None})


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain AlexNet under DDP and torch.compile wrappers (their state_dict keys differ)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
