"""Rank 0's run-store handle once a run has started: the run store is where the trainer
reports, never a reason to stop training.

A write the file refuses (a full disk, an I/O error, a damaged page, a lock held past the
busy timeout) costs one warning line for the whole run; the trainer goes on and its
checkpoints are still written. Metric and event rows stay buffered in the RunStore (at
most `runstore.MAX_BUFFERED_ROWS`, the oldest dropped beyond) and are written when the file
takes writes again; a command verdict that could not be written is retried then too. A
read that fails (the command poll) answers "nothing new" until the file answers again.

The heartbeat thread lives here too: it tells a server on another machine that the trainer
is alive (trainer/runstore/runlock.py, STALE_S).
"""

from __future__ import annotations

import sqlite3
import threading

from trainer import runstore as rs
from trainer.runstore.runlock import HEARTBEAT_S

STORE_ERRORS = (sqlite3.Error, OSError, rs.RunStoreError)
# What a failed read returns: the trainer's callers read lists of commands.
_READ_DEFAULTS = {"pending_commands": [], "commands": []}
# Verdicts the store must get eventually: retried after a failure, in order.
_RETRIED = {"mark_command", "set_status"}


class GuardedStore:
    def __init__(self, store: rs.RunStore, warn=print):
        self.store, self.warn = store, warn
        self.failing = False
        self._retry: list[tuple[str, tuple, dict]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def guarded(*args, **kwargs):
            with self._lock:
                try:
                    self._retry_pending()
                    result = attr(*args, **kwargs)
                except STORE_ERRORS as e:
                    self._failed(e)
                    if name in _RETRIED:
                        self._retry.append((name, args, kwargs))
                    return _READ_DEFAULTS.get(name)
                self._recovered()
                return result

        return guarded

    def _retry_pending(self) -> None:
        while self._retry:
            name, args, kwargs = self._retry[0]
            getattr(self.store, name)(*args, **kwargs)
            self._retry.pop(0)

    def _failed(self, e: BaseException) -> None:
        if not self.failing:
            self.failing = True
            self.warn(f"trainer: warning: run store {self.store.path} cannot be written ({e}); training goes on "
                      f"and checkpoints are still written; metrics wait in memory (up to "
                      f"{rs.MAX_BUFFERED_ROWS} rows) until it can: free space there", flush=True)

    def _recovered(self) -> None:
        if self.failing and not self.store._metric_buf and not self.store._event_buf:
            self.failing = False
            lost = f"; {self.store.dropped_rows} metric/event rows were dropped" if self.store.dropped_rows else ""
            self.warn(f"trainer: run store {self.store.path} is written again{lost}", flush=True)


class Heartbeat(threading.Thread):
    """Writes runs.heartbeat_at every HEARTBEAT_S seconds until stopped; a failed write is
    skipped silently (the store's own warning covers a failing file)."""

    def __init__(self, store: rs.RunStore, run_id: int, every: float = HEARTBEAT_S):
        super().__init__(name="run-heartbeat", daemon=True)
        self.store, self.run_id, self.every = store, run_id, every
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                self.store.heartbeat(self.run_id)
            except STORE_ERRORS:
                pass

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=self.every + 15)
