"""When the learning rate is divided, besides the operator's commands.

manual:  never by itself (the paper: "we adjusted [it] manually throughout training").
plateau: the paper's heuristic made automatic: divide by `factor` when validation top-1
         error has not improved by more than `threshold` for `patience` validations, at
         most `max_drops` times. The rule is trainer.runstore.advice's, which the server's
         advice shows too.
step:    divide by `factor` every `step_epochs` epochs, at most `max_drops` times.

A policy sees only all-reduced validation numbers and epoch counts, so every rank reaches
the same decision without a broadcast. Its state goes into the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trainer.runstore.advice import LR_FACTOR, MAX_DROPS, PLATEAU_PATIENCE, PLATEAU_THRESHOLD, Plateau, PlateauRule


@dataclass
class LRPolicy:
    kind: str = "manual"
    factor: float = LR_FACTOR
    patience: int = PLATEAU_PATIENCE
    max_drops: int = MAX_DROPS
    step_epochs: int = 30
    threshold: float = PLATEAU_THRESHOLD
    best: float | None = None
    bad_epochs: int = 0
    drops: int = 0
    best_epoch: float | None = None

    def __post_init__(self):
        if self.kind not in ("manual", "plateau", "step"):
            raise ValueError(f"unknown LR policy {self.kind!r}")
        if self.factor <= 1:
            raise ValueError(f"the LR factor divides the LR and must exceed 1, not {self.factor}")
        self.rule = PlateauRule(self.patience, self.threshold)

    def after_epoch(self, epoch: int, val_top1_error: float | None) -> str | None:
        """Called once `epoch` (counted from 1) has finished. Returns the reason to divide
        the LR now, or None."""
        if self.kind == "manual" or self.drops >= self.max_drops:
            return None
        if self.kind == "step":
            if self.step_epochs > 0 and epoch % self.step_epochs == 0:
                self.drops += 1
                return f"step: epoch {epoch} is a multiple of {self.step_epochs}"
            return None
        if val_top1_error is None:
            return None
        state = Plateau(self.best, self.best_epoch, self.bad_epochs).observe(epoch, val_top1_error, self.rule)
        self.best, self.best_epoch, self.bad_epochs = state.best, state.best_epoch, state.flat
        if not state.due(self.rule):
            return None
        self.drops += 1
        self.bad_epochs = state.divided().flat
        return (f"plateau: validation top-1 error has not improved on {self.best:.4f} by more than "
                f"{self.threshold:g} for {self.patience} epochs")

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rule"}

    def load_state_dict(self, state: dict) -> None:
        for key in ("best", "bad_epochs", "drops"):
            setattr(self, key, state[key])
        self.best_epoch = state.get("best_epoch")  # checkpoints before it was kept lack it
