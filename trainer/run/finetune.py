"""`trainer train --init-from CHECKPOINT [--freeze-features]`: a new run that starts from
another run's weights, as section 6 fine-tuned nets pre-trained on ImageNet Fall 2011
("1 CNN*") on ILSVRC-2012.

Every tensor whose name and shape match is copied. The classifier (fc3) is kept freshly
initialised where it cannot mean the same thing: another class count, or the same count
of other classes (the shards' class digest differs from the checkpoint's). Any other
difference (`--extra-conv`, `--groups`, `--width`) is an error naming it: copying part of
a feature stack is not fine-tuning. The optimizer, the LR schedule, the step and the epoch
start fresh; the run's config records `init_from` (the page's run header shows it) and its
events which layers were copied. `--freeze-features` keeps the conv layers as they are
(torchvision's features/classifier split), so only the FC layers learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from trainer.run.ckptfile import CheckpointError, describe_mismatch, load_checkpoint, model_weights

CLASSIFIER = ("fc3.weight", "fc3.bias")


@dataclass
class Transfer:
    source: str
    copied: list[str]
    fresh: list[str]
    reason: str  # why the fresh tensors are fresh ("" when everything was copied)

    def line(self) -> str:
        layers = sorted({k.rsplit(".", 1)[0] for k in self.copied})
        text = f"trainer: --init-from {self.source}: copied {', '.join(layers)}"
        return text + (f"; {', '.join(sorted({k.rsplit('.', 1)[0] for k in self.fresh}))} freshly initialised "
                       f"({self.reason})" if self.fresh else "")

    def event(self) -> dict:
        return {"init_from": self.source, "copied": self.copied, "fresh": self.fresh, "reason": self.reason}


def transfer(model: torch.nn.Module, source: str | Path, class_digest: str,
             warn: Callable[[str], None] = print) -> Transfer:
    """Copy `source`'s weights into `model` (the plain AlexNet) as the module's docstring says."""
    record = load_checkpoint(source, warn=warn)
    state = model_weights(source, record)
    mismatch = describe_mismatch(model, state, ignore=CLASSIFIER)
    if mismatch:
        raise CheckpointError(f"--init-from {source}: its network differs from this run's beyond the last "
                              f"layer ({mismatch}); use the same --extra-conv, --groups and --width")
    own = model.state_dict()
    if any(tuple(state[k].shape) != tuple(own[k].shape) for k in CLASSIFIER if k in state):
        reason = f"{state['fc3.bias'].numel()} classes there, {own['fc3.bias'].numel()} here"
    elif record.get("class_digest") not in (None, class_digest):
        reason = "the same number of other classes"
    else:
        reason = ""
    copy = {k: v for k, v in state.items() if k in own and not (reason and k in CLASSIFIER)}
    model.load_state_dict(copy, strict=False)
    return Transfer(str(source), sorted(copy), sorted(k for k in own if k not in copy), reason)


def freeze_features(model: torch.nn.Module) -> list[str]:
    """Stop the conv layers' gradients (before DDP wraps the model: it skips frozen tensors)."""
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith("conv"):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen
