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
open: all of them stayed, idle, forever. So the forkserver gets SIGKILL when the rank
dies, and the workers' watchdog then sees their parent go and they exit.
Importing this module anywhere but inside a forkserver does nothing.
"""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def inside_forkserver() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (AttributeError, OSError):
            pass  # a libc without prctl: the old behaviour


if inside_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
