"""Temporary files of the writers of prepared data: one name, whole-or-nothing, swept when dead.

Every file `preprocess` writes (shards, index files, dataset.json, stats.npz, the
bookkeeping in OUT/.preprocess/) is written to `NAME.tmpPID-HOST` and renamed into place
when whole. `replacing` removes the temporary file when its writer fails (a full disk
among others) and turns a full disk into one `NoSpaceError` naming the file. A writer
killed with SIGKILL cannot clean up: `sweep_dead` removes the temporary files whose writer
is gone, at the start of `preprocess shard` and `preprocess stats --merge`. The host is
in the name because parts of a split job may share one OUT over a network filesystem:
a pid means something only on the host that wrote it, so another host's files are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path

from preprocess import exitcodes

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# name.tmpPID (written before the host was in the name) or name.tmpPID-HOST
_TEMP_RE = re.compile(r"\.tmp(\d+)(?:-([A-Za-z0-9_-]+))?$")


class NoSpaceError(RuntimeError):
    """The disk (or quota) of a file being written is full; nothing half-written is left."""

    exit_code = exitcodes.NO_SPACE


def temp_path(path: str | Path) -> Path:
    """This process's temporary name for `path`, in the same folder (so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp{os.getpid()}-{_HOST}")


def no_space(path: Path, err: OSError) -> NoSpaceError:
    return NoSpaceError(f"no space left on the device of {path} ({err.strerror or err}): free space there "
                        f"and rerun the same command; it keeps what is finished and goes on")


@contextlib.contextmanager
def replacing(path: str | Path):
    """Yield the temporary path to write; rename it to `path` when the block ends, remove it
    when the block fails."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and exitcodes.is_no_space(err):
            raise no_space(path, err) from err
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def writer_is_dead(name: str) -> bool:
    """Whether `name` is a temporary file of this naming whose writer, on this host, is gone."""
    m = _TEMP_RE.search(name)
    if m is None or (m.group(2) is not None and m.group(2) != _HOST):
        return False
    return not _alive(int(m.group(1)))


def sweep_dead(*folders: Path) -> list[Path]:
    """Remove the temporary files in `folders` (not below) whose writer is dead; return them."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if writer_is_dead(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
