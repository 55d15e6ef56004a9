"""Rank 0's run-store handle once a run has started: the run store is where the trainer
reports, never a reason to stop training.

A write the file refuses (a full disk, an I/O error, a damaged page, a lock held past the
busy timeout) costs one warning line for the whole run; the trainer goes on and its
checkpoints are still written. Metric and event rows stay buffered in the RunStore (at
most `runstore.MAX_BUFFERED_ROWS`, the oldest dropped beyond) and are written when the file
takes writes again; a command verdict that could not be written is retried then too. A
read that fails (the command poll) answers "nothing new" until the file answers again.

A store whose file was removed or replaced while the run wrote to it (RunStoreGone) is said
in one line too; nothing is written to that path and no file is made there. The rows wait
in memory as above until a store is made at the path on purpose (`trainer serve --runs-db
PATH`, or any RunStore() there): the next command poll finds it (`RunStore.reopen`), the run
is registered in it again (`rejoin`, by the Session: a new run id, or its own row in a store
put back from a backup) and the rows kept are written there. Commands of the old file are
forgotten (their ids mean nothing in the new one): `generation` tells the command poll.

The heartbeat thread lives here too: it tells a server on another machine that the trainer
is alive (trainer/runstore/runlock.py, STALE_S).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from trainer import runstore as rs
from trainer.runstore.runlock import HEARTBEAT_S

STORE_ERRORS = (OSError, rs.RunStoreError)  # the store turns sqlite3's errors into its own
# What a failed read returns: the trainer's callers read lists of commands.
_READ_DEFAULTS = {"pending_commands": [], "commands": []}
# Verdicts the store must get eventually: retried after a failure, in order.
_RETRIED = {"mark_command", "set_status"}


# Methods whose first argument is a run id: moved to the run's id in a store made again.
_RUN_ID_FIRST = {"log_metrics", "log_event", "update_progress", "set_status", "heartbeat", "pending_commands",
                 "commands", "get_run", "events", "count_commands", "latest_metrics"}
REJOIN_EVERY_S = 2.0


class GuardedStore:
    def __init__(self, store: rs.RunStore, warn=print, *, run_id: int | None = None,
                 rejoin: Callable[[rs.RunStore], int | None] | None = None):
        self.store, self.warn = store, warn
        self.failing = False
        self.gone = False  # the file was removed or replaced; waiting for a store made on purpose
        self.generation = 0  # +1 each time the run is registered in a store made again
        self.detached = False  # the store made again holds another run of this name: not written
        self._run_id, self._current_id, self._rejoin = run_id, run_id, rejoin
        self._last_rejoin = -1e18
        self._retry: list[tuple[str, tuple, dict]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def guarded(*args, **kwargs):
            with self._lock:
                if self.detached:
                    return _READ_DEFAULTS.get(name)
                if self.gone and name == "pending_commands":  # a step boundary: no command is in flight
                    self._try_rejoin()
                if name in _RUN_ID_FIRST and args and args[0] == self._run_id:
                    args = (self._current_id, *args[1:])
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

    @property
    def current_run_id(self) -> int | None:
        """The run's id in the store in use (another than the first after a store made again)."""
        return self._current_id

    def _retry_pending(self) -> None:
        while self._retry:
            name, args, kwargs = self._retry[0]
            getattr(self.store, name)(*args, **kwargs)
            self._retry.pop(0)

    def _failed(self, e: BaseException) -> None:
        if isinstance(e, rs.RunStoreGone) and not self.gone:
            self.gone = self.failing = True
            self.warn(f"trainer: warning: {e}; training goes on and checkpoints are still written; nothing is "
                      f"written to that path and no store is made there: metrics wait in memory (up to "
                      f"{rs.MAX_BUFFERED_ROWS} rows) until one is made there on purpose (`trainer serve "
                      f"--runs-db {self.store.path}`), then this run is written into it", flush=True)
        elif not self.failing:
            self.failing = True
            self.warn(f"trainer: warning: run store {self.store.path} cannot be written ({e}); training goes on "
                      f"and checkpoints are still written; metrics wait in memory (up to "
                      f"{rs.MAX_BUFFERED_ROWS} rows) until it can: free space there", flush=True)

    def _try_rejoin(self) -> None:
        now = time.monotonic()
        if self._rejoin is None or now - self._last_rejoin < REJOIN_EVERY_S:
            return
        self._last_rejoin = now
        if not self.store.reopen():
            return
        try:
            new_id = self._rejoin(self.store)
        except STORE_ERRORS:
            return  # tried again at a later poll
        if new_id is None:
            self.warn(f"trainer: warning: the run store made again at {self.store.path} holds another run of "
                      f"this name; this run writes no more to any store (that run is left as it is); its "
                      f"checkpoints are still written", flush=True)
            self.detached = True
            return
        self.store.rebind_buffered(self._current_id, new_id)
        # Verdicts on commands of the old file are void; a pending status goes to the new row.
        self._retry = [(n, (new_id, *a[1:]) if n == "set_status" else a, k)
                       for n, a, k in self._retry if n != "mark_command"]
        self._current_id, self.gone, self.failing = new_id, False, False
        self.generation += 1
        lost = f" ({self.store.dropped_rows} older rows were dropped)" if self.store.dropped_rows else ""
        self.warn(f"trainer: a run store was made at {self.store.path}: this run is written there from now on "
                  f"(run #{new_id}), with the rows kept in memory{lost}", flush=True)

    def _recovered(self) -> None:
        if self.failing and not self.gone and not self.store._metric_buf and not self.store._event_buf:
            self.failing = False
            lost = f"; {self.store.dropped_rows} metric/event rows were dropped" if self.store.dropped_rows else ""
            self.warn(f"trainer: run store {self.store.path} is written again{lost}", flush=True)


class Heartbeat(threading.Thread):
    """Writes runs.heartbeat_at every HEARTBEAT_S seconds until stopped; a failed write is
    skipped silently (the guard's own warning covers a failing file). It writes to the raw
    store, not through the guard (a heartbeat that fits where metric rows do not would say
    "written again" between two warnings), under the run's id in the store now in use."""

    def __init__(self, guard: GuardedStore, every: float = HEARTBEAT_S):
        super().__init__(name="run-heartbeat", daemon=True)
        self.guard, self.every = guard, every
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            if self.guard.gone or self.guard.detached:
                continue  # the run's id means nothing in a file at the path now
            try:
                self.guard.store.heartbeat(self.guard.current_run_id)
            except STORE_ERRORS:
                pass

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=self.every + 15)
