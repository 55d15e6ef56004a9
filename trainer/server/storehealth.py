"""What `/healthz` says about the run store: healthy, busy, damaged (sticky until restart), or
gone (its file removed or replaced since the server opened it).

Each call reads one row of every table (cheap); a full `PRAGMA quick_check` runs at most
every `store_check_s` seconds (settings), since it reads the whole file. Damage any handler meets on the
way (a "malformed" page under a metric series) is remembered too.
"""

from __future__ import annotations

import threading
import time

from trainer.runstore import RunStore, RunStoreDamaged, RunStoreError, RunStoreGone


class StoreHealth:
    def __init__(self, full_check_s: float):
        self.full_check_s = full_check_s
        self.damage = ""
        self._last_full = time.monotonic()  # create_app has just checked the whole file
        self._lock = threading.Lock()

    def remember(self, reason: str) -> None:
        self.damage = self.damage or reason

    def problem(self, store: RunStore) -> str:
        """'' when healthy, else the reason."""
        if self.damage:
            return self.damage
        try:
            store.probe()
            with self._lock:
                due = time.monotonic() - self._last_full >= self.full_check_s
                if due:
                    self._last_full = time.monotonic()
            if due:
                store.check_integrity()
        except RunStoreGone as e:
            return (f"{e}: this server still reads the file it opened, which nobody writes any more; "
                    f"restart `trainer serve` to use the store at that path (a new, empty one is created "
                    f"if none is there)")
        except RunStoreError as e:
            if isinstance(e, RunStoreDamaged):
                self.remember(str(e))
                return self.damage
            return f"run store unavailable: {e}"
        return ""
