"""The plateau rule: when the paper's operators would have divided the learning rate.

The authors divided it by 10 "when the validation error rate stopped improving with the
current learning rate". This module is that rule's one owner: `trainer train --lr-policy
plateau` acts on it (trainer/run/lr_policy.py) and `trainer serve` shows it as advice (the
page's banner, GET /api/runs/{id}/advice, the `alexnet_plateau_epochs` gauge). It lives in
the run store's room because both import it and the server may not import torch.

The rule: a validation improves when its top-1 error is lower than the best so far by more
than `threshold` (an absolute error rate: 0.001 is 0.1 percentage points); otherwise it is
a flat one, and the best stays the reference (as torch's ReduceLROnPlateau keeps it), so a
slow but steady improvement adds up and is not taken for a plateau. `patience` flat validations in a row make a plateau. A division of the LR
starts the count again (the best is kept: the new LR must beat it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The defaults of `trainer train --patience/--plateau-threshold` and of the advice for runs
# whose policy is not plateau (they store no such parameters).
PLATEAU_PATIENCE = 3
# 0.1 percentage points: on ImageNet's 50,000 validation images, 50 images; less is noise.
PLATEAU_THRESHOLD = 0.001
# What a division divides the LR by, and how many the policy makes (the authors: 10, three times).
LR_FACTOR = 10.0
MAX_DROPS = 3


@dataclass(frozen=True)
class PlateauRule:
    patience: int = PLATEAU_PATIENCE
    threshold: float = PLATEAU_THRESHOLD

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"the plateau patience counts validations and must be at least 1, not {self.patience}")
        if not self.threshold >= 0:
            raise ValueError(f"the plateau threshold is an error rate and must be >= 0, not {self.threshold}")


@dataclass(frozen=True)
class Plateau:
    """Where the rule stands after some validations."""

    best: float | None = None  # the lowest top-1 error so far
    best_epoch: float | None = None  # the epoch of that validation
    flat: int = 0  # validations since the last improvement or division

    def observe(self, epoch: float, error: float, rule: PlateauRule) -> "Plateau":
        """One more validation (its top-1 error, a rate in [0, 1])."""
        if error != error:  # NaN: a broken evaluation says nothing about a plateau
            return self
        if self.best is None or error < self.best - rule.threshold:
            return Plateau(best=error, best_epoch=epoch, flat=0)
        return replace(self, flat=self.flat + 1)

    def divided(self) -> "Plateau":
        """The LR was divided: the current LR has had no validation yet."""
        return replace(self, flat=0)

    def due(self, rule: PlateauRule) -> bool:
        return self.flat >= rule.patience


def plateau(series: list[tuple[int, float, float]], division_steps: list[int], rule: PlateauRule) -> Plateau:
    """The rule over a run's validations [(step, epoch, top-1 error)] in step order and the
    steps at which its LR was divided. A division logged at step d follows every validation
    at a step <= d (the trainer validates at an epoch's end before it acts)."""
    state, divisions, i = Plateau(), sorted(division_steps), 0
    for step, epoch, error in series:
        while i < len(divisions) and divisions[i] < step:
            state, i = state.divided(), i + 1
        state = state.observe(epoch, error, rule)
    if i < len(divisions):
        state = state.divided()
    return state
