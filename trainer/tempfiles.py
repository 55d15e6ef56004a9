"""Files the trainer writes whole: a temporary `.NAME.tmpPID` beside the target, renamed into
place, and the sweep of temporaries whose writer died before the rename.

Checkpoints, filters.png, evaluate's JSON report and neighbors' contact sheet all go through
`replace_atomically`. A writer killed by SIGKILL (OOM, preemption) cannot clean up, so the
next run calls `sweep` on the folders it writes: a temporary whose PID is no longer alive is
removed; one whose PID is alive (another trainer, or an unrelated process that reused the
PID) is kept, because deleting a live writer's file would lose its work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

# `.NAME.tmpPID` (a file being written) and `.NAME.linkPID` (a hard link being renamed).
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|link)(?P<pid>\d+)$")


def temp_for(path: str | Path, kind: str = "tmp") -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}{os.getpid()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` then rename over `path`; on any failure (a full disk) the temporary is
    removed and the old `path`, if any, is left as it was."""
    path = Path(path)
    tmp = temp_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sweep(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in `folder` (of target `name` only, if given) whose writer's PID
    is not alive. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if m is None or (name is not None and m["name"] != name) or pid_alive(int(m["pid"])):
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # another sweeper was first
            continue
        removed.append(p)
    return removed
