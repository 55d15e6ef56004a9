"""A rank's multiprocessing temp folder (/tmp/pymp-*), named for its owner, and the sweep
that removes the folders of dead owners. `owned_dir(prefix)` gives any other temp folder a
process keeps for its life the same naming and the same sweep (the DALI rank's epoch
schedules: /tmp/pipeline-dali-*).

The folder holds the forkserver's listening socket and the resource sharer's; Python
removes it when its process exits normally. A rank killed outright (SIGKILL, OOM,
preemption) cannot, and each such kill left one behind for good. So `claim()` names the
rank's folder pymp-<pid>-<start time>-*, and `sweep()` removes every folder so named whose
owner is dead: the rank's forkserver sweeps when the rank dies
(`pipeline/forkserver_signals.py`), and each reference loader sweeps at its start what a
forkserver killed with its rank (`kill -9` of the process group, a cgroup OOM kill) left.

Ownership is read from the name alone, never from "the temp folder of the process that
died": a forked child inherits its parent's folder with the rest of multiprocessing's
config, so that folder may be a live parent's (ac4c3ad removed one that way).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from multiprocessing import process, util
from pathlib import Path

from common import procs

MP_PREFIX = "pymp"


def _owned(prefix: str) -> re.Pattern:
    return re.compile(rf"{re.escape(prefix)}-(\d+)-(\d+)-")


def _remove(rmtree, path: str) -> None:
    rmtree(path, ignore_errors=True)
    current = process.current_process()
    if current is not None:
        current._config["tempdir"] = None


def claim() -> str:
    """This process's multiprocessing temp folder, made now and named for this process
    unless it has one already (made earlier, or inherited from a forking parent: that one
    stays its maker's). Removed at a normal exit, as multiprocessing's own is."""
    config = process.current_process()._config
    if config.get("tempdir") is None:
        pid = os.getpid()
        path = tempfile.mkdtemp(prefix=f"{MP_PREFIX}-{pid}-{procs.start_time(pid)}-")
        # shutil.rmtree held here: the finalizer can run late in interpreter shutdown.
        util.Finalize(None, _remove, args=(shutil.rmtree, path), exitpriority=-100)
        config["tempdir"] = path
    return config["tempdir"]


def owned_dir(prefix: str) -> Path:
    """A new temp folder named for this process (PREFIX-<pid>-<start time>-*), after sweeping
    the folders of that prefix whose makers are dead (killed before they could remove them).
    The caller removes it when done, as with `tempfile.mkdtemp`."""
    sweep(prefix=prefix)
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{pid}-{procs.start_time(pid)}-"))


def owner(path: Path, prefix: str = MP_PREFIX) -> tuple[int, int] | None:
    """(pid, start time) of a claimed folder's maker; None for any other folder."""
    m = _owned(prefix).match(path.name)
    return (int(m[1]), int(m[2])) if m else None


def dead_owners(root: str | Path | None = None, prefix: str = MP_PREFIX) -> list[Path]:
    """Claimed folders under `root` (the temp folder) of this user whose maker is dead."""
    found = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{prefix}-*-*-*"):
        who = owner(path, prefix)
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue  # removed meanwhile
        if who and mine and not procs.alive(*who):
            found.append(path)
    return found


def sweep(root: str | Path | None = None, prefix: str = MP_PREFIX) -> list[Path]:
    """Remove the claimed folders of dead makers; never one whose maker runs."""
    removed = dead_owners(root, prefix)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
