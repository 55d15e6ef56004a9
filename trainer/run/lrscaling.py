"""`--lr-scaling linear --warmup-epochs K` (Goyal et al., 2017): an explicit, recorded,
non-paper choice for global batches larger than the paper's 128.

`--lr` stays the LR for a batch of 128 (the paper's 0.01). With linear scaling a fresh run
starts from `--lr x batch / 128`, and over the first K epochs the optimizer's LR rises
linearly, step by step, from `--lr` to that; operator commands and the LR policy divide
the scaled LR as usual (during the warm-up the ramp applies on top). The warm-up is a
function of the step alone, so a resumed run continues it exactly. Both flags are in the
stored config (run store, checkpoints) and the run's first LR entry says how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.run.optim import set_lr

PAPER_BATCH = 128


def initial_lr(cfg) -> tuple[float, str]:
    """(the run's starting LR, the reason recorded with it)."""
    if cfg.lr_scaling != "linear":
        return cfg.lr, "initial"
    lr = cfg.lr * cfg.batch_size / PAPER_BATCH
    return lr, f"initial: --lr {cfg.lr:g} x batch {cfg.batch_size}/{PAPER_BATCH} (--lr-scaling linear, not the paper's)"


@dataclass
class Warmup:
    """The optimizer's LR during the warm-up: `lr x ramp(step)`."""

    start_ratio: float  # --lr / the scaled LR
    steps: int  # warm-up length in steps (0: none)
    active: bool = True

    @classmethod
    def of(cls, cfg, steps_per_epoch: int) -> "Warmup":
        scaled, _ = initial_lr(cfg)
        steps = cfg.warmup_epochs * steps_per_epoch if cfg.lr_scaling == "linear" else 0
        return cls(cfg.lr / scaled if scaled else 1.0, steps, active=steps > 0)

    def ramp(self, step: int) -> float:
        if step >= self.steps:
            return 1.0
        return self.start_ratio + (1.0 - self.start_ratio) * step / self.steps

    def apply(self, optimizer, step: int, lr: float) -> None:
        """Before step `step`: set the optimizer's LR while the warm-up lasts, and once after."""
        if not self.active:
            return
        set_lr(optimizer, lr * self.ramp(step))
        self.active = step < self.steps
