"""Progress of `preprocess shard`: a tqdm bar on a terminal, plain lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts inputs done; shows images/s and ETA. `mode` is "auto", "bar", "lines" or "off"."""

    def __init__(self, total: int, desc: str = "preprocess", mode: str = "auto", every_s: float = 10.0, stream=None):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode, self.done = mode, 0
        self.start = self._last_line = time.monotonic()
        self._bar = tqdm(total=total, desc=desc, unit="img", file=self.stream, smoothing=0.1) if mode == "bar" else None

    def update(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self._last_line >= self.every_s:
            self._line()

    def _line(self) -> None:
        self._last_line = now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / max(self.total, 1)
        print(f"{self.desc}: {self.done}/{self.total} images ({pct:.0f}%), {rate:.1f} images/s, ETA {_clock(eta)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self.done:
            self._line()
