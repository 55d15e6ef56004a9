"""Rank 0's view of the run: throughput, data wait, ETA, a progress bar, run-store progress.

On a terminal a tqdm bar shows loss, LR, images/s and ETA; otherwise (docker logs, CI)
a plain line every `line_seconds`. The run store's `runs` row is updated about once a
second; metric rows are written every `log_every` steps by the loop.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from trainer import runstore as rs


class Meter:
    """Images/s and the fraction of wall time spent waiting for data, per log interval."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.reset()
        self.images_per_sec = 0.0
        self.data_wait_frac = 0.0
        self.step_seconds = 0.0

    def reset(self) -> None:
        self._t0 = time.perf_counter()
        self._steps = 0
        self._wait = 0.0

    def add(self, data_wait: float) -> None:
        self._steps += 1
        self._wait += data_wait

    def close_interval(self) -> None:
        """Called at a point where the device has caught up (a loss was read back)."""
        wall = time.perf_counter() - self._t0
        if self._steps and wall > 0:
            self.images_per_sec = self._steps * self.images_per_step / wall
            self.data_wait_frac = min(1.0, self._wait / wall)
            self.step_seconds = wall / self._steps
        self.reset()


class Progress:
    def __init__(self, *, total_steps: int, start_step: int, enabled: bool, line_seconds: float = 10.0):
        self.total_steps, self.enabled, self.line_seconds = total_steps, enabled, line_seconds
        self.bar = None
        self._last_line = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def update(self, step: int, *, epoch: float, loss: float | None, lr: float, meter: Meter, eta_s: float) -> None:
        if not self.enabled:
            return
        loss_s = "-" if loss is None else f"{loss:.4f}"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"ep {epoch:.2f} loss {loss_s} lr {lr:.2g} {meter.images_per_sec:.0f} img/s",
                                     refresh=True)
            return
        now = time.monotonic()
        if now - self._last_line >= self.line_seconds:
            self._last_line = now
            self.write(f"step {step}/{self.total_steps} epoch {epoch:.2f} loss {loss_s} lr {lr:.3g} "
                       f"{meter.images_per_sec:.1f} img/s data wait {meter.data_wait_frac:.0%} "
                       f"eta {_hms(eta_s)}")

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StoreReporter:
    """Rank 0's writes to the run store: metric rows per log interval, progress ~1/s.
    `fixed` holds the run's fixed facts; each progress write adds what the loop measured."""

    def __init__(self, store, run_id: int, *, fixed: rs.RunProgress, progress_seconds: float = 1.0):
        self.store, self.run_id, self.fixed = store, run_id, fixed
        self.progress_seconds = progress_seconds
        self._last = -1e18
        self._compiling_since: float | None = None
        self._compile_s: float | None = None

    def compiling(self, since: float | None) -> None:
        """torch.compile's first step began at wall time `since`; None: it has ended."""
        if since is None and self._compiling_since is not None:
            self._compile_s = time.time() - self._compiling_since
        self._compiling_since = since

    def metrics(self, step: int, epoch: float, values: dict) -> None:
        self.store.log_metrics(self.run_id, step, epoch, values)

    def interval(self, step: int, epoch: float, *, loss: float, lr: float, meter: Meter, images_seen: int) -> None:
        self.metrics(step, epoch, {rs.LOSS: loss, rs.LR: lr, rs.IMAGES_PER_SEC: meter.images_per_sec,
                                   rs.DATA_WAIT: meter.data_wait_frac, rs.EPOCH: epoch, rs.IMAGES_SEEN: images_seen})

    def progress(self, step: int, epoch: float, *, lr: float, meter: Meter, eta_s: float, images_seen: int,
                 force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.progress_seconds:
            return
        self._last = now
        record = dataclasses.replace(self.fixed, images_per_sec=meter.images_per_sec,
                                     data_wait_frac=meter.data_wait_frac, eta_s=eta_s, images_seen=images_seen,
                                     compiling_since=self._compiling_since, compile_s=self._compile_s)
        self.store.update_progress(self.run_id, epoch=epoch, step=step, lr=lr, progress=record)
        self.store.maybe_flush()
