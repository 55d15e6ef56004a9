"""Temporary files: one name, whole-or-nothing, swept when their writer is dead.

Every file `preprocess` and the trainer write whole (shards, index files, dataset.json,
stats.npz, the bookkeeping in OUT/.preprocess/, checkpoints, evaluate's report, filters.png,
neighbors' sheet) is written to `NAME.tmpPID-HOST` and renamed into place when whole
(`replace_atomically`, or `replacing` as a block). `replacing` removes the temporary file when its writer fails (a full disk
among others) and turns a full disk into one `NoSpaceError` naming the file. A writer
killed with SIGKILL cannot clean up: `sweep_dead` removes the temporary files whose writer
is gone, at the start and the end of `preprocess shard` (a worker killed with its parent may
be a zombie, not yet gone, when the rerun starts), `preprocess stats --merge` and `trainer train`
(its checkpoints folder), and before each report the trainer's tools write. The host is
in the name because parts of a split job may share one OUT over a network filesystem:
a pid means something only on the host that wrote it, so another host's files are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path
from typing import Callable

from common import exitcodes, procs

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# NAME.tmpPID-HOST (NAME.linkPID-HOST: a hard link about to be renamed), and the forms of
# earlier versions: NAME.tmpPID, and the trainer's hidden .NAME.tmpPID / .NAME.linkPID.
_TEMP_RE = re.compile(r"^\.?(?P<name>.+)\.(?:tmp|link)(?P<pid>\d+)(?:-(?P<host>[A-Za-z0-9_-]+))?$")


class NoSpaceError(RuntimeError):
    """The disk (or quota) of a file being written is full; nothing half-written is left."""

    exit_code = exitcodes.NO_SPACE


def temp_path(path: str | Path, kind: str = "tmp") -> Path:
    """This process's temporary name for `path`, in the same folder (so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{kind}{os.getpid()}-{_HOST}")


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


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)`, then rename over `path`; on any failure the temporary is removed and the
    old `path`, if any, is left as it was. Errors pass unchanged (see `replacing`)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def writer_is_dead(name: str, target: str | None = None) -> bool:
    """Whether `name` is a temporary file (of `target`, if given) whose writer, on this host,
    is gone."""
    m = _TEMP_RE.match(name)
    if m is None or (m["host"] is not None and m["host"] != _HOST):
        return False
    if target is not None and m["name"] != target:
        return False
    return not procs.alive(int(m["pid"]))  # a zombie is dead: a killed writer stays one until reaped


def sweep_dead(*folders: str | Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files in `folders` (not below; of `target` only, if given) whose
    writer is dead; return them."""
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if writer_is_dead(p.name, target) and p.is_file():
                try:
                    p.unlink()
                except FileNotFoundError:  # another sweeper was first
                    continue
                removed.append(p)
    return removed
