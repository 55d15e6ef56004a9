"""Memory of a process and its descendants, read from /proc (Linux only; no psutil here).

"Private" is what `smaps_rollup` counts as Private_Clean + Private_Dirty: pages that this
process alone maps. A page a forked worker still shares with its parent, or a shared index
mapped by several workers, is not private to any of them; a copy a worker made (a pickled
index it unpickled, an object whose refcount it touched) is. That is the figure that
multiplies with the number of workers. It also counts a shared-memory page that only this
process maps so far: the batch a reference-loader worker is writing (into shared memory,
`pipeline.hostmem.empty_shared`), which the rank maps next and which exists once however
it is counted. `shm_private_mb` is that part. Likewise the pages of the split's offsets
table file (`preprocess.offsetstable`) that a worker has mapped and no other process has
yet: page cache, one copy a node, shared as soon as a second process maps the page (and
the kernel maps up to 64 KB around each page read): `table_private_mb`. A worker's own
memory is `private_mb - shm_private_mb - table_private_mb`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from preprocess.offsetstable import table_name

MB = 1024 * 1024


def _kb_fields(path: str) -> dict[str, int]:
    out = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[name.strip()] = int(parts[0])
    return out


SHM_PREFIXES = ("/dev/shm/", "/memfd:", "/SYSV")  # how smaps names shared-memory mappings
TABLE_SUFFIX = table_name("")  # ".offsets.npy"


def private_kb(pid: int) -> tuple[int, int, int]:
    """(private kB, of which in shared-memory mappings, of which in offsets-table files) of
    one process, from one read of its smaps, so that they agree while a batch is written."""
    total = shm_total = table_total = 0
    kind = None
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return 0, 0, 0
    for line in lines:
        parts = line.split()
        if parts and not parts[0].endswith(":"):  # a mapping's header line: range perms ... [path]
            path = parts[5] if len(parts) >= 6 else ""
            kind = "shm" if path.startswith(SHM_PREFIXES) else "table" if path.endswith(TABLE_SUFFIX) else None
        elif parts and parts[0] in ("Private_Clean:", "Private_Dirty:"):
            total += int(parts[1])
            shm_total += int(parts[1]) if kind == "shm" else 0
            table_total += int(parts[1]) if kind == "table" else 0
    return total, shm_total, table_total


def usage(pid: int, shm: bool = False) -> dict[str, float] | None:
    """{rss_mb, private_mb, hwm_mb} of one process, or None once it is gone; with `shm`,
    also shm_private_mb and table_private_mb, private_mb then read in the same pass."""
    smaps = _kb_fields(f"/proc/{pid}/smaps_rollup")
    status = _kb_fields(f"/proc/{pid}/status")
    if not smaps or not status:
        return None
    out = {"rss_mb": smaps["Rss"] / 1024, "private_mb": (smaps["Private_Clean"] + smaps["Private_Dirty"]) / 1024,
           "hwm_mb": status.get("VmHWM", 0) / 1024}
    if shm:
        private, shared_memory, table = private_kb(pid)
        out["private_mb"], out["shm_private_mb"], out["table_private_mb"] = private / 1024, shared_memory / 1024, table / 1024
    return out


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def descendants(pid: int) -> dict[int, int]:
    """Every descendant pid with its depth (1: a child)."""
    out, frontier, depth = {}, [pid], 0
    while frontier:
        depth += 1
        frontier = [k for p in frontier for k in children(p)]
        out.update({k: depth for k in frontier})
    return out


class TreeSampler:
    """Polls a process's children every `period` seconds in a thread; keeps each one's peak
    private memory (the workers of `preprocess shard` live only while the run does)."""

    def __init__(self, pid: int, period: float = 0.2):
        self.pid, self.period = pid, period
        self.peak_private: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            for kid in children(self.pid):
                u = usage(kid)
                if u is not None:
                    self.peak_private[kid] = max(self.peak_private.get(kid, 0.0), u["private_mb"])

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def self_usage() -> dict[str, float]:
    return usage(os.getpid()) or {}
