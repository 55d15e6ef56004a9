"""`torch.compile` for a run: the rule (`--compile auto|on|off`), and the first step's wait.

auto compiles on CUDA, where it pays (the paper's step 1.34x eager on an H100, the update
fused into one pass), and not on the CPU, where the compiler's wait (gcc, on the host's
cores) outweighs what a small CPU run gains. On: the model's forward and backward are compiled (`torch.compile`) and
so is PaperSGD's update (`PaperSGD(fused=True)`). Every batch has one shape
(`pipeline.base`: damaged rows are masked, never dropped; eval pads its last batch) and the
learning rate reaches the compiled update as a tensor, so a run compiles once: an LR
division, a validation and a resume do not compile again. `compiled_graphs` counts what
this process compiled, so the trainer can say when that promise broke.

The first compiled step waits for the compiler (about 40 s for AlexNet on an H100): the
terminal says so when it starts and every few seconds after ("compiling, 40 s"), and the
run store's progress record holds when it began, so the page counts the same seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch

COMPILE_CHOICES = ("auto", "on", "off")


def compile_enabled(setting: str, device: torch.device | str) -> bool:
    """The rule for a run's `--compile`: "auto" means on CUDA."""
    if setting not in COMPILE_CHOICES:
        raise ValueError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, not {setting!r}")
    return setting == "on" or (setting == "auto" and torch.device(device).type == "cuda")


def compile_net(net: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """The net as trained: compiled for one static shape (every batch has it), or as it is."""
    return torch.compile(net, dynamic=False) if enabled else net


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompileWait:
    """Around the first compiled step: `say` gets a line as it starts, one every `every`
    seconds while it lasts ("compiling, 40 s") and one when it is done; `mark` gets the wall
    time it began, then None. After it: `seconds` (its length) and `graphs` (compiled)."""

    def __init__(self, say: Callable[[str], None], mark: Callable[[float | None], None], every: float = 10.0):
        self.say, self.mark, self.every = say, mark, every
        self.seconds = 0.0
        self.graphs = 0
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "CompileWait":
        self._t0 = time.perf_counter()
        self.say("compiling the step (torch.compile; --compile off skips it): the first step waits for it")
        self.mark(time.time())
        self._ticker = threading.Thread(target=self._tick, name="compile-wait", daemon=True)
        self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._done.wait(self.every):
            self.say(f"compiling, {time.perf_counter() - self._t0:.0f} s")

    def __exit__(self, kind, value, tb) -> None:
        self._done.set()
        self._ticker.join()
        self.seconds = time.perf_counter() - self._t0
        self.graphs = compiled_graphs()
        self.mark(None)
        if kind is None:
            self.say(f"compiled in {self.seconds:.0f} s ({self.graphs} graphs)")


class RunCompile:
    """One run's compile as the loop sees it: `first_step` runs the step that waits for the
    compiler (CompileWait) and records it (`event("compiled", ...)`); `check` says, once
    the run ends, whether anything compiled again (`event("recompiled", ...)` and a line)."""

    def __init__(self, enabled: bool, *, say: Callable[[str], None], mark: Callable[[float | None], None],
                 event: Callable[[str, dict], None]):
        self.enabled, self.say, self.mark, self.event = enabled, say, mark, event
        self.graphs_after_first: int | None = None

    @property
    def pending(self) -> bool:
        return self.enabled and self.graphs_after_first is None

    def first_step(self, step, *args):
        with CompileWait(self.say, self.mark) as wait:
            out = step(*args)
        self.graphs_after_first = wait.graphs
        self.event("compiled", {"seconds": round(wait.seconds, 1), "graphs": wait.graphs})
        return out

    def check(self) -> None:
        first, graphs = self.graphs_after_first, compiled_graphs()
        if first is None or graphs <= first:
            return
        self.event("recompiled", {"graphs": graphs, "first_step_graphs": first})
        self.say(f"trainer: torch.compile compiled again during the run ({graphs} graphs, {first} after the "
                 f"first step): each time a step waited; TORCH_LOGS=recompiles names why")
