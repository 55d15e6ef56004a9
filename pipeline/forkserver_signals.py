"""Signals for the reference loader's forkserver and workers: ignore SIGINT, die with the rank.

First entry of the forkserver preload list. A Ctrl-C in a terminal (or the demo's
supervisor) signals the whole process group. The trainer's main process catches SIGINT
and stops at a step boundary with a checkpoint; a worker or the forkserver dying of
KeyboardInterrupt instead would take the epoch down first. The forkserver itself ignores
SIGINT only after its preload (importing torch takes seconds), and hands its children
the disposition it found, so setting it here covers both.

A rank killed outright (SIGKILL, OOM) must not leave its workers behind either. They are
the forkserver's children, so torch's watchdog (which watches a worker's parent) never
saw the rank go, and the forkserver waits for EOF on a pipe that every worker holds
open: all of them stayed, idle, forever. So the forkserver gets SIGTERM when the rank
dies; it kills its workers, removes the temp folders of dead ranks (`common/mptemp.py`:
the killed rank's holds this server's socket and the workers') and exits.
Importing this module anywhere but inside a forkserver does nothing.
"""

import contextlib
import os
import signal
import sys
import time

from common import mptemp
from common import procs

# How long the forkserver waits for the dying rank to be gone: the kernel signals when the
# rank's thread that started the server exits, and its other threads may still be exiting.
RANK_EXIT_WAIT_S = 2.0


def inside_forkserver() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


def _sweep_and_exit(server: int, rank: int, rank_started: int):
    """The forkserver's SIGTERM handler. Its workers inherit it (forked from the server):
    in them SIGTERM keeps its default action."""

    def handler(signum, frame):
        if os.getpid() != server:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        deadline = time.monotonic() + RANK_EXIT_WAIT_S
        while procs.alive(rank, rank_started) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not procs.alive(rank, rank_started):
            # Workers for a dead rank: end them now rather than when their watchdog
            # notices (seconds), and before their exit code looks for the sockets
            # the sweep removes from the rank's folder, which they share.
            for child in procs.children(server):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            mptemp.sweep()
        os._exit(0)
    return handler


if inside_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _rank = os.getppid()
    signal.signal(signal.SIGTERM, _sweep_and_exit(os.getpid(), _rank, procs.start_time(_rank)))
    procs.die_with_parent(signal.SIGTERM)
    if os.getppid() != _rank:  # the rank died before the line above: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
