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
dies, and the workers' watchdog then sees their parent go and they exit. SIGTERM rather
than SIGKILL so that the forkserver first removes its listening socket and the folder it
is in (/tmp/pymp-*): the rank made them and, killed, cannot remove them.
Importing this module anywhere but inside a forkserver does nothing.
"""

import ctypes
import os
import shutil
import signal
import socket
import sys
import time

PR_SET_PDEATHSIG = 1


def _forkserver_main_frame():
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return frame
        frame = frame.f_back
    return None


def inside_forkserver() -> bool:
    return _forkserver_main_frame() is not None


def _listener_path() -> str | None:
    """The path of the socket the forkserver listens on (its main()'s `listener_fd`)."""
    frame = _forkserver_main_frame()
    fd = frame.f_locals.get("listener_fd") if frame is not None else None
    if fd is None:
        return None
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            name = s.getsockname()
    except OSError:
        return None
    return name if isinstance(name, str) and name else None


def _clean_up_after_parent_and_exit(path: str | None):
    """SIGTERM handler: exit; if the rank that made this forkserver is gone, first remove
    its multiprocessing temp folder (this server's socket, and the one through which the
    rank passed its shared index to the workers), as the rank's own exit would have. A
    rank that is alive keeps its folder.

    The death signal can come while the dying rank's other threads still exit: the
    parent only changes once the whole rank is gone, so wait a little for that. DataLoader
    workers, forked from this server, replace the handler with torch's own at start
    (tests/pipeline/test_persistent_workers.py checks that a worker's SIGTERM leaves the
    live rank's folder alone)."""
    parent = os.getppid()

    def handler(signum, frame):
        deadline = time.monotonic() + 2.0
        while path and os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.01)
        if path and os.getppid() != parent:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        os._exit(0)
    return handler


def die_with_parent() -> None:
    """SIGTERM this process when its parent exits (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (AttributeError, OSError):
            pass  # a libc without prctl: the old behaviour


if inside_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _clean_up_after_parent_and_exit(_listener_path()))
    die_with_parent()
