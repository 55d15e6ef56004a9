"""Processes the test session started that are still running, and the multiprocessing
temp folders of dead processes (the session-end check in tests/conftest.py).

The pytest process makes itself a child subreaper (Linux): a process whose parent dies
(the forkserver of a SIGKILLed trainer, say) is then re-parented to pytest instead of to
init, so it still counts as the session's, and a stray cannot hide by being orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from common import procs

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0  # what issue 13 allows a killed process's children to take


def adopt_orphans() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):
            ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit() and (ppid := procs.parent(int(entry))) is not None:
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def described(pid: int) -> str:
    """A process for a failure message: its command line and, from /proc/PID/status, its
    state, parent and signal masks (a signal that never came, or came blocked or ignored)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return f"{pid} (gone)"
    keep = ("State", "PPid", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    status = ", ".join(line.replace("\t", " ") for line in lines if line.split(":")[0] in keep)
    return f"{pid} {command_line(pid)!r} [{status}]"


def reap_zombies() -> None:
    """Collect this process's dead children (orphans adopted by the subreaper, which no
    Popen waits for). Only at the session's end: a wait earlier could take a status that
    a test's Popen is waiting for."""
    for pid in procs.children(os.getpid()):
        if not procs.alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def own_helpers() -> set[int]:
    """This process's own multiprocessing forkserver and resource tracker (started when a
    test ran a reference loader in the pytest process): they serve it for its whole life
    and end with it (EOF on their pipe), so they are no strays. Their children still count."""
    from multiprocessing import forkserver, resource_tracker

    pids = {getattr(forkserver._forkserver, "_forkserver_pid", None),
            getattr(resource_tracker._resource_tracker, "_pid", None)}
    return {p for p in pids if p is not None}


def running_strays(grace_s: float = GRACE_S) -> dict[int, str]:
    """{pid: command line} of this process's descendants still running after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while True:
        reap_zombies()
        alive = [p for p in descendants(os.getpid()) if procs.alive(p) and p not in own_helpers()]
        if not alive or time.monotonic() >= deadline:
            return {p: command_line(p) for p in alive}
        time.sleep(0.1)


def group_gone(pgid: int, within: float = GRACE_S) -> bool:
    """Whether process group `pgid` ends within `within` seconds (zombies reaped as it goes)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        reap_zombies()
        time.sleep(0.2)
    return False


def kill_group(*procs, sig: int = signal.SIGKILL) -> None:
    """End each process's group (started with start_new_session=True) and reap it."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
