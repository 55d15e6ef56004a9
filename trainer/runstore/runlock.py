"""One trainer per run: an exclusive lock on the run dir, and how a reader tells a live run
from one whose trainer is gone.

`trainer train` (rank 0) takes `RUN_DIR/.lock` with flock(LOCK_EX) before it reads a
checkpoint and keeps it open for the run's life; the kernel releases it when the process
dies, however it dies (kill -9, OOM). The file holds the holder's pid and host, so that a
second trainer on the same run dir can say who holds it. The descriptor is O_CLOEXEC, and
the reference loader's workers come from a forkserver started by exec, so no child keeps
the lock after its trainer's death.

A run row that says "running" is shown as "interrupted" (`observed_status`) when:
  * the lock file is reachable here, names the row's holder, and nobody holds it (a server
    on the trainer's host, or one sharing its run dir's filesystem); or
  * its heartbeat (written every HEARTBEAT_S seconds by a thread of the trainer) is older
    than STALE_S: the rule for a server that cannot see the run dir.

`RUN_DIR/.run-id` (`run_dir_id`) tells one run dir from another under the same run name.
Never imports torch: the server uses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path

from common import exitcodes

LOCK_NAME = ".lock"
# The run dir's identity: a random id written at its first run and kept in the run's row
# (config.run_uid), so that a run name reused with another run dir, or with one deleted and
# made again, is told from the run that name belongs to (a moved run dir keeps its id).
RUN_ID_NAME = ".run-id"
HEARTBEAT_S = 5.0
STALE_S = 60.0
# A reader probing the lock holds it (shared) for microseconds; a starting trainer that
# meets such a probe tries again for this long before it concludes that a trainer holds it.
ACQUIRE_RETRY_S = 1.0


class RunLocked(RuntimeError):
    """Another live trainer holds the run dir (exit status USAGE: choose another run dir or wait)."""

    exit_code = exitcodes.USAGE


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


class RunLock:
    """The held lock of one run dir; `release()` (or the process's death) gives it up."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.info = holder_info()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._take()
        except BaseException:
            os.close(self.fd)
            raise
        # Who holds it, for the next trainer's message; written only once the lock is ours.
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(self.info).encode(), 0)

    def _take(self) -> None:
        deadline = time.monotonic() + ACQUIRE_RETRY_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES) or time.monotonic() > deadline:
                    if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                        raise RunLocked(self._held_message()) from None
                    raise
            time.sleep(0.05)

    def _held_message(self) -> str:
        holder = read_holder(self.path.parent)
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}" if holder
               else "another process")
        return (f"run dir {self.path.parent} is held by {who} (another `trainer train`): wait for it to "
                f"end, stop it, or choose another --run-dir")

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = -1


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path):
    """Rank 0 (RANK unset or 0) holds the run dir's lock inside the block and gets the holder's
    {pid, host, since}; other ranks get None."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    lock = RunLock(run_dir)
    try:
        yield lock.info
    finally:
        lock.release()


def run_dir_id(run_dir: str | Path) -> str:
    """The run dir's id, made at its first run (by rank 0, holding the lock). An empty or
    unreadable file (a writer killed between create and write) is made again."""
    path = Path(run_dir) / RUN_ID_NAME
    try:
        found = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        found = ""
    if len(found) == 32 and all(c in "0123456789abcdef" for c in found):
        return found
    made = uuid.uuid4().hex
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (made + "\n").encode())
    finally:
        os.close(fd)
    return made


def read_holder(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def lock_held(run_dir: str | Path) -> bool | None:
    """True/False when the lock file is reachable here; None when it is not (another
    machine's disk, or a run from before the lock existed)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return True
        return None
    finally:
        os.close(fd)  # also drops the shared lock we may have taken
    return False


def observed_status(run: dict, now: float | None = None) -> str:
    """The status to show for a run-store row (see the module docstring)."""
    if run["status"] != "running":
        return run["status"]
    run_dir = run["config"].get("run_dir") if isinstance(run.get("config"), dict) else None
    held = lock_held(run_dir) if isinstance(run_dir, str) and run_dir else None
    # The lock speaks for this run only if its file names the run's holder: the same path on
    # this machine may be another machine's run dir, not a shared one.
    if held is not None and _same_holder(read_holder(run_dir), run.get("holder") or {}):
        return "running" if held else "interrupted"
    beat = run.get("heartbeat_at") or run.get("updated_at") or 0.0
    return "running" if (now or time.time()) - beat <= STALE_S else "interrupted"


def _same_holder(a: dict, b: dict) -> bool:
    return bool(a) and all(a.get(k) == b.get(k) for k in ("pid", "host", "since"))


def interrupted_reason(run: dict) -> str:
    holder = run.get("holder") or {}
    who = f" (pid {holder['pid']} on host {holder.get('host', '?')})" if "pid" in holder else ""
    return (f"run is interrupted: its trainer{who} is gone; continue it with "
            f"`trainer train --run-dir ... --resume auto`")
