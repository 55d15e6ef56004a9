"""Whether a process is alive (by pid and start time), and dying with one's parent.

The one liveness rule: `common.tempfiles`' sweep of dead writers' files, the pipeline's
temp folders and the trainer use it (here, in the bottom room, so that all of them may).
Light on purpose (no torch): the reference loader's forkserver imports it first thing, and
`python -m trainer` before anything heavy (trainer/__main__.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent exits (Linux; elsewhere
    nothing). The kernel means the parent *thread*: start children from a thread that
    lives as long as the process (the main one)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(sig))
        except (AttributeError, OSError):
            pass  # a libc without prctl: the old behaviour


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (the name may hold spaces and parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 where /proc has none): with the
    pid, it names one process, even after the pid is reused."""
    fields = _stat(pid)
    return int(fields[19]) if fields else 0


def parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux: read from /proc; elsewhere none)."""
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit() and parent(int(entry)) == pid:
            out.append(int(entry))
    return out


def alive(pid: int, started: int = 0) -> bool:
    """True while process `pid` (the one that started at `started`, where given) runs; a
    zombie is dead. Where /proc cannot tell, a pid that exists counts as alive: the safe
    answer for anyone about to remove what it owns."""
    fields = _stat(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X") and (not started or int(fields[19]) == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # EPERM: it exists
    return True
