"""Throughput measurement that is honest on a GPU: warm up first, synchronize before reading
the clock, and stop on whichever of a time or a step budget comes first (so the dry run
stays tiny and the GPU run stays inside the device lease)."""

from __future__ import annotations

import time
from dataclasses import dataclass


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@dataclass
class Budget:
    warmup_steps: int
    min_seconds: float
    max_steps: int


def throughput(step, items_per_step: int, budget: Budget, device: str) -> dict:
    """Runs `step()` repeatedly; returns items/s over the timed steps."""
    for _ in range(budget.warmup_steps):
        step()
    sync(device)
    t0 = time.perf_counter()
    steps = 0
    while steps < budget.max_steps:
        step()
        steps += 1
        # The clock is read without a sync; the final sync below makes the total exact.
        if steps >= 2 and time.perf_counter() - t0 >= budget.min_seconds:
            break
    sync(device)
    seconds = time.perf_counter() - t0
    return {"items_per_s": round(steps * items_per_step / seconds, 1), "steps": steps,
            "seconds": round(seconds, 3), "batch": items_per_step}
