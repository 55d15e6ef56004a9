"""A failed or hung rank ends the whole group in seconds, and every rank says which.

Without this, a rank that dies (a DALI batch that cannot be repaired, an OOM, a bug) or
hangs leaves the others blocked in a collective until NCCL's timeout (10 minutes) or
gloo's (30), and on another node nothing says which rank it was. Here every rank runs a
watchdog thread over the run's rendezvous store (the TCPStore torchrun provides at
MASTER_ADDR:MASTER_PORT, through its own client connection):

  * a rank whose training raises writes `failed` = "rank K (host, pid): the error" before
    it exits (the first writer wins);
  * each rank publishes once a second where its main thread is (the innermost frame) and
    whether it is waiting on the others (inside torch.distributed, DDP or autograd's
    backward, where DDP all-reduces) or on torch.compile (Dynamo, Inductor). Rank 0
    names a rank hung when its main thread has not moved for `--hang-timeout` seconds
    outside such a wait while another rank waits: it writes `failed` with the rank and
    the line it is stuck on;
  * every watchdog that reads `failed` prints it and ends its process at once with status
    RANK_FAILED (6); rank 0 also records it in the run store (event `rank_failed`, status
    failed), so `trainer serve` shows the run failed, and `--resume auto` continues from
    the last checkpoint.
Loader workers die with their rank (`pipeline.procs.die_with_parent`). A rank whose main
thread holds the GIL while hung cannot run its watchdog; torchrun's agent kills it when
the others have ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from datetime import timedelta

from common.exitcodes import RANK_FAILED

POLL_S = 1.0
_WAITING = (f"{os.sep}torch{os.sep}distributed{os.sep}", f"{os.sep}torch{os.sep}nn{os.sep}parallel{os.sep}",
            f"{os.sep}torch{os.sep}autograd{os.sep}",
            # torch.compile's first step: Inductor waits on its compile workers for tens of
            # seconds with a still stack, which is work, not a hang (--compile is on for CUDA).
            f"{os.sep}torch{os.sep}_dynamo{os.sep}", f"{os.sep}torch{os.sep}_inductor{os.sep}")


def waits_in(filename: str) -> bool:
    """Whether a frame of this file is a wait that is not a hang of its own (see _WAITING)."""
    return any(part in filename for part in _WAITING)


def main_thread_at(ident: int) -> tuple[tuple, bool, str]:
    """(the stack as (file, line) pairs, whether it waits on other ranks, its innermost
    frame outside torch and the standard library as "file:line function")."""
    frame = sys._current_frames().get(ident)
    stack, waiting, where = [], False, "?"
    while frame is not None:
        code = frame.f_code
        stack.append((code.co_filename, frame.f_lineno))
        waiting = waiting or waits_in(code.co_filename)
        if where == "?" and f"{os.sep}torch{os.sep}" not in code.co_filename \
                and not code.co_filename.startswith(sys.base_prefix):
            where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}"
        frame = frame.f_back
    return tuple(stack), waiting, where


def open_store(world):
    """A client of the run's rendezvous store, keyed by this launch (a torchrun restart
    gets fresh keys); None in a world of one."""
    if not world.distributed or "MASTER_ADDR" not in os.environ:
        return None
    import torch.distributed as dist

    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timedelta(seconds=30))
    prefix = f"trainer-failfast/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/" \
             f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    return dist.PrefixStore(prefix, client)


class Watchdog:
    def __init__(self, world, hang_timeout: float, on_failed=None, store=None):
        self.world, self.hang_timeout = world, hang_timeout
        self.on_failed = on_failed  # rank 0: record the failure in the run store
        self.store = store if store is not None else open_store(world)
        self.main = threading.get_ident()
        self.me = f"rank {world.rank} ({socket.gethostname()}, pid {os.getpid()})"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failfast", daemon=True)
        self._seen: dict[int, tuple] = {}  # rank 0: rank -> (its last beat, when it changed)

    def start(self) -> "Watchdog":
        if self.store is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- the main thread ---------------------------------------------------------------
    def report(self, exc: BaseException) -> str | None:
        """After this rank's training raised: write it (unless another rank failed first)
        and return the first failure when it was another rank's."""
        if self.store is None:
            return None
        mine = f"{self.me}: {type(exc).__name__}: {exc}".splitlines()[0][:2000]
        with contextlib.suppress(Exception):
            first = self.store.compare_set("failed", "", mine).decode()
            return None if first == mine else first
        return None

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        last, moved, beat = None, time.monotonic(), 0
        while not self._stop.wait(POLL_S):
            try:
                stack, waiting, where = main_thread_at(self.main)
                if stack != last:
                    last, moved = stack, time.monotonic()
                beat += 1
                self.store.set(f"at/{self.world.rank}", json.dumps([beat, time.monotonic() - moved, waiting, where]))
                if self.world.is_main and self.hang_timeout > 0:
                    self._find_hung()
                if self.store.check(["failed"]):
                    failed = self.store.get("failed").decode()
                    if failed:
                        self._end(failed)
            except Exception:  # the store gone (the run ending, its host dead): the collectives say it
                return

    def _find_hung(self) -> None:
        """Rank 0: a live rank stuck outside a wait while a live rank waits is hung. A rank
        is live while its beat advances (one that ended its run stops beating)."""
        now, states = time.monotonic(), []
        for rank in range(self.world.world_size):
            if not self.store.check([f"at/{rank}"]):
                return  # not every rank has started yet
            beat, still, waiting, where = json.loads(self.store.get(f"at/{rank}"))
            seen_beat, seen_at = self._seen.get(rank, (None, now))
            if beat != seen_beat:
                self._seen[rank] = (beat, now)
            elif now - seen_at > 5 * POLL_S:
                continue  # no longer beating
            states.append((rank, still, waiting, where))
        if not any(waiting for _, _, waiting, _ in states):
            return
        for rank, still, waiting, where in states:
            if not waiting and still >= self.hang_timeout:
                self.store.compare_set("failed", "", f"rank {rank} hung: its main thread has not moved for "
                                                     f"{still:.0f} s at {where} while the others wait for it")
                return

    def _end(self, failed: str) -> None:
        print(f"trainer: {failed}; rank {self.world.rank} ends (status {RANK_FAILED}); "
              f"continue with --resume auto", file=sys.stderr, flush=True)
        if self.on_failed is not None:
            with contextlib.suppress(Exception):
                self.on_failed(failed)
        os._exit(RANK_FAILED)


def record_in_run_store(runs_db: str, name: str, message: str) -> None:
    """Rank 0: the run's row says failed, with the failing rank, from any thread."""
    from trainer import runstore as rs

    store = rs.RunStore(runs_db)
    try:
        run = store.get_run_by_name(name)
        if run is not None:
            store.log_event(run["id"], run.get("step"), "rank_failed", {"message": message}, flush=True)
            store.set_status(run["id"], "failed")
    finally:
        store.close()


@contextlib.contextmanager
def guard(world, cfg):
    """Around a rank's training: the watchdog runs, and a raise is written for the others.
    A rank that fails because another failed first exits RANK_FAILED naming that one."""
    on_failed = (lambda msg: record_in_run_store(cfg.runs_db, cfg.name, msg)) if world.is_main else None
    dog = Watchdog(world, cfg.hang_timeout, on_failed).start()
    try:
        yield dog
    except BaseException as e:
        if isinstance(e, SystemExit) and not e.code:
            raise
        first = dog.report(e)
        if first is not None:
            dog._end(first)  # our error is a consequence of that rank's
        raise
    finally:
        dog.stop()
