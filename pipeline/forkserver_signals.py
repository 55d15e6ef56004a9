"""First entry of the reference loader's forkserver preload list: makes the forkserver, and
so every DataLoader worker it forks, ignore SIGINT.

A Ctrl-C in a terminal (or the demo's supervisor) signals the whole process group. The
trainer's main process catches SIGINT and stops at a step boundary with a checkpoint; a
worker or the forkserver dying of KeyboardInterrupt instead would take the epoch down
first. The forkserver itself ignores SIGINT only after its preload (importing torch takes
seconds), and hands its children the disposition it found, so setting it here covers both.
Importing this module anywhere but inside a forkserver does nothing.
"""

import signal
import sys


def inside_forkserver() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if inside_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
